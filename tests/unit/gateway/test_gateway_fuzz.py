"""Hypothesis on the gateway's parser, ACK builder, MLLP deframer and message intake (with an
in-memory store): whatever the bytes, an AdtMessage or a Rejection, a well-formed ACK, never a
crash. REFLEXE_FUZZ_HL7 sets the examples per property (derandomized)."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime

import hl7
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflexe_gateway.adapters import store as store_module
from reflexe_gateway.domain.ack import build_ack
from reflexe_gateway.domain.hl7 import AdtMessage, Rejection, read_adt, read_header
from reflexe_gateway.entrypoints.mllp import Deframer, frame
from reflexe_gateway.service_layer.gateway import Gateway
from reflexe_gateway.settings import Sender
from tests.support.fuzz_report import report_at_module_end
from tests.unit.gateway.hl7_samples import BIRTH_DATE, NIR, SURNAME, adt

EXAMPLES = int(os.environ.get("REFLEXE_FUZZ_HL7", "500"))
fuzz = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FINESS = "340780477"
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
SEEN: Counter[str] = Counter()  # outcomes per property
report_fuzz_outcomes = report_at_module_end("HL7 fuzz outcomes", SEEN)

SEPARATORS = "|^~\\&\r\n"
hl7ish = st.text(alphabet=st.sampled_from(list(SEPARATORS) + list("MSHPIDVEZBA0123456789.+-T ")), max_size=300)
triggers = st.sampled_from(["A01", "A02", "A03", "A06", "A08", "A11", "A12", "A13", "A40", "R01", "", "A1", "A011"])


@st.composite
def mutated(draw) -> str:
    """A valid IHE PAM FR message with some of its characters replaced, removed or inserted."""
    text = adt(draw(triggers), FINESS, draw(st.text(min_size=0, max_size=12)),
               patient_class=draw(st.sampled_from(["E", "I", "O", "", "X"])),
               disposition=draw(st.sampled_from(["", "9", "1", "DC"])),
               event_time=draw(st.sampled_from(["20261126092900", "2026", "20261399", "99999999999999+9999", "",
                                                 "20261126092900.1234-0130", "abc"])))
    chars = list(text)
    for _ in range(draw(st.integers(0, 6))):
        if not chars:
            break
        at = draw(st.integers(0, len(chars) - 1))
        op = draw(st.sampled_from(["replace", "delete", "insert"]))
        char = draw(st.sampled_from(list(SEPARATORS) + ["\x00", "é", "X", "\x1c", "\x0b"]))
        if op == "replace":
            chars[at] = char
        elif op == "delete":
            del chars[at]
        else:
            chars.insert(at, char)
    return "".join(chars)


def _read(text: str) -> str:
    try:
        message = read_adt(text)
    except Rejection as rejection:
        assert rejection.ack in ("AR", "AE") and rejection.location and rejection.code
        return f"{rejection.ack}:{rejection.location}"
    assert isinstance(message, AdtMessage) and message.header.control_id
    assert message.event_at.tzinfo is not None
    return "read"


def _ack_is_well_formed(text: str, code: str) -> None:
    try:
        header = read_header(text)
    except Rejection:
        header = None
    ack = build_ack(header, code, "ACK", NOW, ("100", "MSH^1", text[:50]))
    parsed = hl7.parse(ack)
    assert str(parsed.segment("MSA")[1]) == code
    assert len(ack.split("\r")) == 4  # MSH, MSA, ERR and the final segment terminator


@fuzz
@given(st.one_of(st.text(max_size=400), hl7ish.map(lambda t: "MSH" + t), mutated()))
def test_the_parser_never_crashes(text):
    SEEN[f"parser {_read(text).split(':')[0]}"] += 1
    _ack_is_well_formed(text, "AR")


@fuzz
@given(mutated())
def test_mutated_pam_fr_messages_are_read_or_rejected_with_a_field(text):
    SEEN[f"mutated {_read(text).split(':')[0]}"] += 1


@fuzz
@given(st.lists(st.binary(max_size=60), max_size=8), st.lists(st.binary(min_size=0, max_size=80), max_size=5),
       st.integers(1, 50))
def test_the_deframer_returns_exactly_the_frames_whatever_the_chunks(noise, payloads, chunk):
    payloads = [p.replace(b"\x0b", b"").replace(b"\x1c", b"") for p in payloads]
    noise = [n.replace(b"\x0b", b"") for n in noise]
    stream = b"".join(n + frame(p) for n, p in zip(noise + [b""] * len(payloads), payloads))
    deframer = Deframer(max_bytes=64)
    out = []
    for at in range(0, len(stream), chunk):
        out += deframer.feed(stream[at:at + chunk])
    assert out == [p if len(p) <= 64 else None for p in payloads]
    SEEN["deframer streams"] += 1


class MemoryStore:
    """The store's contract in memory: one row per (sender, MSH-10)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], store_module.NewMessage] = {}

    async def record(self, m: store_module.NewMessage) -> store_module.Recorded:
        first = self.rows.setdefault((m.sender_finess, m.control_id), m)
        return store_module.Recorded(len(self.rows), first.ack_control_id, duplicate=first is not m)

    async def cancellation_recorded(self, sender: str, pseudonym: str, movement_id: str) -> bool:
        return False


@fuzz
@given(st.one_of(st.binary(max_size=400), mutated().map(lambda t: t.encode("utf-8")),
                 mutated().map(lambda t: t.encode("latin-1", errors="replace"))))
async def test_intake_answers_every_payload_with_a_parseable_ack(payload):
    store = MemoryStore()
    gateway = Gateway(store, {FINESS: Sender(kind="hospital", networks=["127.0.0.1/32"])}, b"k" * 32, lambda: NOW)
    ack = (await gateway.receive(payload, "127.0.0.1")).decode("latin-1")
    code = str(hl7.parse(ack).segment("MSA")[1])
    assert code in ("AA", "AE", "AR")
    assert (code == "AA") == bool(store.rows)
    for row in store.rows.values():
        text = repr(row)
        assert SURNAME not in text and NIR not in text and BIRTH_DATE not in text
    SEEN[f"intake {code}"] += 1
