"""The HL7 gateway on the real PostgreSQL, with the referral service in-process: AA then effect,
duplicates, garbage on a live connection, unmatched patients, senders not allowed, cancellations,
an HAD's admission and discharge, and no direct identifier in the gateway's tables or logs."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from reflexe.v1 import matching_pb2

from reflexe_common.envelope import wrap
from reflexe_common.topics import MATCHING_EVENTS, REFERRAL_EVENTS
from tests.integration.gateway.conftest import PSEUDONYM_KEY, mllp, msa
from tests.support.data import referral_body, unique_finess
from tests.support.kafka import read_all
from tests.support.services import eventually, token
from tests.unit.gateway.hl7_samples import BIRTH_DATE, GIVEN, NIR, STREET, SURNAME, adt

pytestmark = pytest.mark.integration


async def open_referral(referral, gateway, patient_id: str, **overrides) -> str:
    body = referral_body(gateway.hospital, **overrides)
    body["patient"]["pseudonym"] = gateway.pseudonym(patient_id)
    answer = await referral.post("/v1/referrals", json=body, headers=token("hospital", finess=gateway.hospital))
    assert answer.status_code == 201, answer.text
    return answer.json()["referral_id"]


async def referral_state(referral, gateway, referral_id: str) -> dict:
    answer = await referral.get(f"/v1/referrals/{referral_id}", headers=token("hospital", finess=gateway.hospital))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def message_row(topics, sender: str, control_id: str, status: str | None = None):
    conn = await asyncpg.connect(topics.database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM gateway.messages WHERE sender_finess = $1 AND control_id = $2",
                                  sender, control_id)
    finally:
        await conn.close()
    return row if row is not None and (status is None or row["status"] == status) else None


async def wait_row(topics, sender: str, control_id: str, status: str):
    return await eventually(lambda: message_row(topics, sender, control_id, status), timeout=30,
                            what=f"message {control_id} {status}")


async def cancellation_reason(referral, gateway, referral_id: str) -> str | None:
    answer = await referral.get(f"/v1/referrals/{referral_id}/timeline",
                                headers=token("hospital", finess=gateway.hospital))
    cancelled = [e for e in answer.json()["events"] if e["type"] == "ReferralCancelled"]
    return cancelled[0]["reason"] if cancelled else None


async def test_an_inpatient_admission_is_acknowledged_then_cancels_the_referral(gateway, referral, topics):
    referral_id = await open_referral(referral, gateway, "PAT-A01")
    client = await mllp(gateway.mllp_port)
    try:
        ack = await client.send(adt("A01", gateway.hospital, "PAT-A01", control_id="ADM-1", patient_class="I"))
    finally:
        await client.close()
    assert msa(ack)[1:3] == ["AA", "ADM-1"]
    # Recorded before the ACK: the row exists as soon as the AA is read.
    assert await message_row(topics, gateway.hospital, "ADM-1") is not None
    row = await wait_row(topics, gateway.hospital, "ADM-1", "APPLIED")
    assert str(row["referral_id"]) == referral_id
    assert (await referral_state(referral, gateway, referral_id))["status"] == "CANCELLED"
    assert await cancellation_reason(referral, gateway, referral_id) == "PATIENT_HOSPITALISED"


async def test_a_duplicate_gets_the_same_ack_and_no_second_effect(gateway, referral, topics):
    referral_id = await open_referral(referral, gateway, "PAT-DUP")
    message = adt("A03", gateway.hospital, "PAT-DUP", control_id="DUP-1", disposition="9")
    client = await mllp(gateway.mllp_port)
    try:
        first = await client.send(message)
        await wait_row(topics, gateway.hospital, "DUP-1", "APPLIED")
        second = await client.send(message)
    finally:
        await client.close()
    assert msa(first) == msa(second) and msa(first)[1] == "AA"
    ack_id = lambda ack: ack.split("\r")[0].split("|")[9]  # noqa: E731 - MSH-10 of the ACK
    assert ack_id(first) == ack_id(second)
    conn = await asyncpg.connect(topics.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM gateway.messages WHERE sender_finess = $1 AND control_id = 'DUP-1'",
                                   gateway.hospital) == 1
        cancellations = await conn.fetchval("SELECT count(*) FROM referral.referral_events WHERE referral_id = $1 "
                                            "AND type = 'reflexe.v1.ReferralCancelled'", uuid.UUID(referral_id))
    finally:
        await conn.close()
    assert cancellations == 1
    assert await cancellation_reason(referral, gateway, referral_id) == "PATIENT_DECEASED"


async def test_garbage_gets_ar_and_the_next_message_on_the_connection_works(gateway, topics):
    client = await mllp(gateway.mllp_port)
    try:
        for garbage in (b"garbage", b"MSH|", b"\x00\xff\xfe", b"MSH|^~\\&|A|B|C|D|x||ADT^A01|G1|P|2.5\rPID|1"):
            assert msa(await client.send(garbage))[1] == "AR"
        client.writer.write(b"noise outside any frame")  # skipped, unanswered
        ack = await client.send(adt("A02", gateway.hospital, "PAT-G", control_id="AFTER-GARBAGE"))
    finally:
        await client.close()
    assert msa(ack)[1:3] == ["AA", "AFTER-GARBAGE"]
    assert (await wait_row(topics, gateway.hospital, "AFTER-GARBAGE", "NO_EFFECT"))["trigger"] == "A02"


async def test_a_message_without_a_pi_identifier_gets_ae_naming_pid_3(gateway):
    message = adt("A01", gateway.hospital, "X").replace("X^^^CHU-MTP&1.2.250.1.71.4.2.7&ISO^PI~", "")
    client = await mllp(gateway.mllp_port)
    try:
        ack = await client.send(message)
    finally:
        await client.close()
    assert msa(ack)[1] == "AE"
    err = next(s for s in ack.split("\r") if s.startswith("ERR|")).split("|")
    assert err[2] == "PID^1^3" and err[3].startswith("101^")


async def test_a_sender_not_on_the_allow_list_is_rejected(gateway, topics):
    stranger = unique_finess()
    client = await mllp(gateway.mllp_port)
    try:
        ack = await client.send(adt("A01", stranger, "P1", control_id="STRANGER-1", patient_class="I"))
    finally:
        await client.close()
    assert msa(ack)[1] == "AR"
    assert await message_row(topics, stranger, "STRANGER-1") is None


async def test_an_unknown_patient_is_acknowledged_and_kept_as_unmatched(gateway, http, topics):
    client = await mllp(gateway.mllp_port)
    try:
        ack = await client.send(adt("A03", gateway.hospital, "NOBODY", control_id="UNMATCHED-1"))
    finally:
        await client.close()
    assert msa(ack)[1] == "AA"
    await wait_row(topics, gateway.hospital, "UNMATCHED-1", "UNMATCHED")
    assert (await http.get("/v1/messages")).status_code == 401
    mine = await http.get("/v1/messages", headers=token("hospital", finess=gateway.hospital))
    assert mine.status_code == 200, mine.text
    listed = [m for m in mine.json()["messages"] if m["control_id"] == "UNMATCHED-1"]
    assert len(listed) == 1 and listed[0]["pseudonym"] == gateway.pseudonym("NOBODY") and listed[0]["trigger"] == "A03"
    other = await http.get("/v1/messages", headers=token("hospital", finess=unique_finess()))
    assert other.status_code == 200 and other.json()["messages"] == []
    assert (await http.get("/v1/messages", headers=token("desk", department="34"))).status_code == 403

    async def counted():
        text = (await http.get("/metrics")).text
        line = next((l for l in text.splitlines() if l.startswith("reflexe_gateway_unmatched_messages ")), "")
        return line and float(line.split()[1]) >= 1

    await eventually(counted, what="unmatched gauge")


async def test_an_ed_exit_is_recorded_on_the_open_referral_once_and_its_cancellation_kept_for_a_person(
        gateway, referral, topics, http):
    referral_id = await open_referral(referral, gateway, "PAT-EXIT", ed_arrival_at="2026-11-26T06:10:00+01:00")
    client = await mllp(gateway.mllp_port)
    try:
        # 09:29 Paris time (no offset, as PAM FR systems send it) is 08:29 UTC.
        assert msa(await client.send(adt("A03", gateway.hospital, "PAT-EXIT", control_id="EXIT-1",
                                         movement_id="MVT-EXIT", event_time="20261126092900")))[1] == "AA"
        row = await wait_row(topics, gateway.hospital, "EXIT-1", "APPLIED")
        # A second A03 for the same stay records nothing more.
        assert msa(await client.send(adt("A03", gateway.hospital, "PAT-EXIT", control_id="EXIT-2",
                                         event_time="20261126093500")))[1] == "AA"
        await wait_row(topics, gateway.hospital, "EXIT-2", "MATCHED")
        assert msa(await client.send(adt("A13", gateway.hospital, "PAT-EXIT", control_id="EXIT-A13",
                                         movement_id="MVT-EXIT", action="CANCEL", event_time="20261126100000")))[1] == "AA"
        await wait_row(topics, gateway.hospital, "EXIT-A13", "NOT_UNDONE")
    finally:
        await client.close()
    assert str(row["referral_id"]) == referral_id
    assert (await referral_state(referral, gateway, referral_id))["status"] == "REQUESTED"
    timeline = await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=token("hospital", finess=gateway.hospital))
    exits = [e for e in timeline.json()["events"] if e["type"] == "EdExitRecorded"]
    assert len(exits) == 1
    assert exits[0]["exited_at"] == "2026-11-26T08:29:00+00:00"
    assert exits[0]["actor"] == f"hospital:{gateway.hospital}"

    # Published through the referral's outbox, as every referral event, for its consumers.
    async def published():
        found = await read_all(topics, REFERRAL_EVENTS.name, lambda e: e.type == "reflexe.v1.EdExitRecorded"
                               and e.message.header.referral_id == referral_id)
        return found or None

    [record] = await eventually(published, timeout=30, what="EdExitRecorded on the referral events topic")
    assert record.message.exited_at.ToDatetime(tzinfo=UTC).isoformat() == "2026-11-26T08:29:00+00:00"


async def test_an_ed_exit_dated_before_the_ed_arrival_is_refused(gateway, referral, topics):
    referral_id = await open_referral(referral, gateway, "PAT-EARLY", ed_arrival_at="2026-11-26T10:00:00+01:00")
    client = await mllp(gateway.mllp_port)
    try:
        assert msa(await client.send(adt("A03", gateway.hospital, "PAT-EARLY", control_id="EARLY-1",
                                         event_time="20261126092900")))[1] == "AA"
    finally:
        await client.close()
    row = await wait_row(topics, gateway.hospital, "EARLY-1", "REFUSED")
    assert str(row["referral_id"]) == referral_id
    timeline = await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=token("hospital", finess=gateway.hospital))
    assert "EdExitRecorded" not in [e["type"] for e in timeline.json()["events"]]


async def test_a_cancellation_arriving_first_keeps_its_movement_from_being_applied(gateway, referral, topics):
    referral_id = await open_referral(referral, gateway, "PAT-LATE")
    client = await mllp(gateway.mllp_port)
    try:
        cancel = adt("A11", gateway.hospital, "PAT-LATE", control_id="A11-FIRST", movement_id="MVT-LATE",
                     action="CANCEL", event_time="20261126100000")
        assert msa(await client.send(cancel))[1] == "AA"
        await wait_row(topics, gateway.hospital, "A11-FIRST", "NO_EFFECT")
        admission = adt("A01", gateway.hospital, "PAT-LATE", control_id="A01-LATE", movement_id="MVT-LATE",
                        patient_class="I", event_time="20261126093000")
        assert msa(await client.send(admission))[1] == "AA"
    finally:
        await client.close()
    assert (await message_row(topics, gateway.hospital, "A01-LATE"))["status"] == "CANCELLED"
    assert (await referral_state(referral, gateway, referral_id))["status"] == "REQUESTED"


async def test_cancelling_an_applied_hospitalisation_is_kept_for_a_person(gateway, referral, topics, http):
    await open_referral(referral, gateway, "PAT-UNDO")
    client = await mllp(gateway.mllp_port)
    try:
        await client.send(adt("A01", gateway.hospital, "PAT-UNDO", control_id="UNDO-A01", movement_id="MVT-U",
                              patient_class="I"))
        await wait_row(topics, gateway.hospital, "UNDO-A01", "APPLIED")
        await client.send(adt("A11", gateway.hospital, "PAT-UNDO", control_id="UNDO-A11", movement_id="MVT-U",
                              action="CANCEL", event_time="20261126100000"))
    finally:
        await client.close()
    await wait_row(topics, gateway.hospital, "UNDO-A11", "NOT_UNDONE")
    kept = await http.get("/v1/messages", params={"status": "NOT_UNDONE"}, headers=token("hospital", finess=gateway.hospital))
    assert "UNDO-A11" in [m["control_id"] for m in kept.json()["messages"]]


async def test_an_had_reports_admission_and_discharge(gateway, referral, topics):
    referral_id = await open_referral(referral, gateway, "PAT-HAD")
    # The matcher's offer to the gateway's HAD, as the capacity service would publish it.
    producer = AIOKafkaProducer(**topics.kafka_options())
    await producer.start()
    try:
        offer = matching_pb2.OfferProposed(referral_id=referral_id, department="34", offer_id=f"o-{uuid.uuid4().hex[:8]}",
                                           had_finess=gateway.had, hold_id="h", explanation="test")
        offer.occurred_at.GetCurrentTime()
        offer.hold_until.FromSeconds(offer.occurred_at.seconds + 3600)
        envelope = wrap(offer, "tests")
        await producer.send_and_wait(MATCHING_EVENTS.name, envelope.value(), key=b"34", headers=envelope.headers())
    finally:
        await producer.stop()

    async def offered():
        state = await referral_state(referral, gateway, referral_id)
        return state if state["status"] == "OFFERED" else None

    state = await eventually(offered, what="offer recorded")
    had = token("had", finess=gateway.had)
    accepted = await referral.post(f"/v1/referrals/{referral_id}/offers/{state['current_offer']['offer_id']}/accept",
                                   headers=had)
    assert accepted.status_code == 200, accepted.text
    client = await mllp(gateway.mllp_port)
    try:
        assert msa(await client.send(adt("A01", gateway.had, "HAD-LOCAL-9", control_id="HAD-A01", patient_class="I",
                                         preadmit=referral_id)))[1] == "AA"
        await wait_row(topics, gateway.had, "HAD-A01", "APPLIED")
        assert (await referral_state(referral, gateway, referral_id))["status"] == "ADMITTED"
        assert msa(await client.send(adt("A03", gateway.had, "HAD-LOCAL-9", control_id="HAD-A03",
                                         preadmit=referral_id)))[1] == "AA"
        await wait_row(topics, gateway.had, "HAD-A03", "APPLIED")
    finally:
        await client.close()
    assert (await referral_state(referral, gateway, referral_id))["status"] == "DISCHARGED"


async def test_no_name_nir_birth_date_or_address_in_the_gateways_tables_or_logs(gateway, topics, caplog):
    caplog.set_level(logging.DEBUG)
    client = await mllp(gateway.mllp_port)
    try:
        await client.send(adt("A01", gateway.hospital, "PAT-PRIV", control_id="PRIV-1", patient_class="I"))
        await client.send(adt("A01", gateway.hospital, "PAT-PRIV", control_id="PRIV-2").replace("PRIV", "PR|V"))
    finally:
        await client.close()
    await eventually(lambda: message_row(topics, gateway.hospital, "PRIV-1"), what="recorded")
    conn = await asyncpg.connect(topics.database_url)
    try:
        rows = await conn.fetch("SELECT row_to_json(m)::text AS line FROM gateway.messages m")
        columns = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'gateway' AND table_name = 'messages'")}
    finally:
        await conn.close()
    dump = "\n".join(r["line"] for r in rows) + "\n" + caplog.text
    assert rows
    for secret in (SURNAME, GIVEN, NIR, BIRTH_DATE, STREET, "PAT-PRIV", PSEUDONYM_KEY):
        assert secret not in dump, secret
    assert not columns & {"raw", "message", "payload", "name", "birth_date", "nir", "ins"}


async def test_only_the_gateway_reports_patient_events(gateway, referral):
    body = {"message_key": f"{gateway.hospital}/AUTH-1", "sender_finess": gateway.hospital, "effect": "HOSPITALISED",
            "pseudonym": gateway.pseudonym("P"), "occurred_at": "2026-11-26T09:00:00+00:00"}
    assert (await referral.post("/v1/patient-events", json=body)).status_code == 401
    for role, scope in (("hospital", {"finess": gateway.hospital}), ("had", {"finess": gateway.had}),
                        ("desk", {"department": "34"}), ("admin", {})):
        answer = await referral.post("/v1/patient-events", json=body, headers=token(role, **scope))
        assert answer.status_code == 403, (role, answer.text)
    bad = await referral.post("/v1/patient-events", json={**body, "pseudonym": "DUPONT"}, headers=token("gateway"))
    assert bad.status_code == 422 and "body.pseudonym" in [e["field"] for e in bad.json()["errors"]]
