"""Hypothesis on the real listener (TCP, PostgreSQL behind): arbitrary payloads and mutated IHE
PAM FR messages on one connection, each answered with an ACK in order, and the connection still
takes a valid message afterwards. REFLEXE_FUZZ_HL7_LISTENER sets the examples."""

from __future__ import annotations

import os
from collections import Counter

import hl7
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.gateway.conftest import mllp, msa
from tests.support.fuzz_report import report_at_module_end
from tests.unit.gateway.hl7_samples import adt
from tests.unit.gateway.test_gateway_fuzz import mutated

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("REFLEXE_FUZZ_HL7_LISTENER", "150"))
SEEN: Counter[str] = Counter()
report_acks = report_at_module_end("HL7 listener fuzz ACKs", SEEN)


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(max_size=300).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")),
                          mutated().map(lambda t: t.replace("\x0b", "").replace("\x1c", "").encode("latin-1", "replace"))),
                min_size=1, max_size=4))
async def test_the_listener_answers_everything_and_keeps_the_connection(gateway, payloads):
    client = await mllp(gateway.mllp_port)
    try:
        for payload in payloads:
            # The mutated messages come from the allow-listed hospital, so some reach PostgreSQL.
            ack = await client.send(payload.replace(b"340780477", gateway.hospital.encode()))
            code = str(hl7.parse(ack).segment("MSA")[1])
            assert code in ("AA", "AE", "AR")
            SEEN[code] += 1
        after = await client.send(adt("A02", gateway.hospital, "FUZZ-AFTER"))
        assert msa(after)[1] == "AA"
    finally:
        await client.close()
