"""The gateway as its own process (python -m reflexe_gateway, settings from the environment):
an AA means the message is in PostgreSQL, so after a SIGKILL and a restart the same message is
a duplicate (same ACK, one row) and not recorded twice."""

from __future__ import annotations

import json

import asyncpg
import pytest

from tests.integration.gateway.conftest import mllp, msa
from tests.support.data import unique_finess
from tests.support.services import ServiceProcess, eventually, free_port, service_env
from tests.unit.gateway.hl7_samples import adt

pytestmark = pytest.mark.integration


async def test_an_acknowledged_message_survives_a_sigkill(topics, tmp_path):
    hospital, mllp_port = unique_finess(), free_port()
    env = service_env(topics, GATEWAY_PSEUDONYM_KEY="process test key, 32 characters..", GATEWAY_MLLP_PORT=str(mllp_port),
                      GATEWAY_CLIENT_SECRET="unused: the referral service is not running here",
                      GATEWAY_REFERRAL_URL=f"http://127.0.0.1:{free_port()}",
                      GATEWAY_SENDERS=json.dumps({hospital: {"kind": "hospital", "networks": ["127.0.0.1/32"]}}))
    message = adt("A01", hospital, "PAT-KILL", control_id="KILL-1", patient_class="I")
    process = ServiceProcess("reflexe_gateway", env, "GATEWAY_HTTP_PORT", tmp_path).start()
    try:
        await process.wait_ready()
        client = await mllp(mllp_port)
        first = await client.send(message)
        await client.close()
        assert msa(first)[1:3] == ["AA", "KILL-1"]
        process.kill()
        process = ServiceProcess("reflexe_gateway", env, "GATEWAY_HTTP_PORT", tmp_path)
        process.start()
        await process.wait_ready()

        async def connected():
            try:
                return await mllp(mllp_port)
            except OSError:
                return None

        client = await eventually(connected, what="MLLP listener after restart")
        again = await client.send(message)
        await client.close()
    finally:
        process.stop()
    assert msa(again) == msa(first)
    assert again.split("\r")[0].split("|")[9] == first.split("\r")[0].split("|")[9]
    conn = await asyncpg.connect(topics.database_url)
    try:
        rows = await conn.fetch("SELECT status, attempts FROM gateway.messages WHERE sender_finess = $1", hospital)
    finally:
        await conn.close()
    # One row; the referral service is unreachable here, so the effect waits, retried, never lost.
    assert len(rows) == 1 and rows[0]["status"] == "PENDING"
