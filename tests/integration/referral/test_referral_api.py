"""The referral API on the real broker and database: auth, validation, idempotency, publication."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
import pytest

from reflexe_common.kafka_acls import register_system
from reflexe_common.topics import REFERRAL_EVENTS
from reflexe_referral.entrypoints.app import build_app
from reflexe_referral.settings import ReferralSettings
from tests.support.data import full_referral_body, referral_body, unique_finess
from tests.support.kafka import dead_letters, read_all
from tests.support.platform import in_process_env
from tests.support.services import eventually, serve_in_process, token

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def referral_url(topics):
    settings = ReferralSettings(**in_process_env(topics))
    async with serve_in_process(build_app(settings)) as url:
        yield url


async def test_every_endpoint_needs_a_token(referral_url):
    async with httpx.AsyncClient(base_url=referral_url) as client:
        for method, path in [("POST", "/v1/referrals"), ("GET", f"/v1/referrals/{uuid.uuid4()}"),
                             ("GET", "/v1/departments/34/referrals"),
                             ("POST", f"/v1/referrals/{uuid.uuid4()}/offers/x/accept")]:
            response = await client.request(method, path, json={})
            assert response.status_code == 401, (method, path)
            assert response.json()["code"] == "MISSING_TOKEN"
            assert response.headers["www-authenticate"] == "Bearer"
        forged = {"Authorization": "Bearer " + "x" * 40}
        assert (await client.get("/v1/departments/34/referrals", headers=forged)).status_code == 401


async def test_hospital_posts_only_as_itself_and_desks_see_only_their_department(referral_url):
    finess = unique_finess()
    async with httpx.AsyncClient(base_url=referral_url) as client:
        response = await client.post("/v1/referrals", json=referral_body(unique_finess()), headers=token("hospital", finess=finess))
        assert response.status_code == 403 and response.json()["code"] == "OUT_OF_SCOPE"
        response = await client.post("/v1/referrals", json=referral_body(finess), headers=token("had", finess=finess))
        assert response.status_code == 403 and response.json()["code"] == "ROLE_FORBIDDEN"
        assert (await client.get("/v1/departments/31/referrals", headers=token("desk", department="34"))).status_code == 403
        assert (await client.get("/v1/departments/34/referrals", headers=token("desk", department="34"))).status_code == 200


async def test_bad_input_names_the_field(referral_url):
    finess = unique_finess()
    headers = token("hospital", finess=finess)
    async with httpx.AsyncClient(base_url=referral_url) as client:
        unknown_commune = await client.post("/v1/referrals", json=referral_body(finess, commune="34999"), headers=headers)
        assert unknown_commune.status_code == 422
        assert unknown_commune.json()["errors"][0]["field"] == "body.patient.care_commune"
        unknown_mpp = await client.post("/v1/referrals", json=referral_body(finess, clinical={"main_mpp": "99"}), headers=headers)
        assert unknown_mpp.status_code == 422
        assert unknown_mpp.json()["errors"][0]["field"] == "body.clinical.main_mpp"
        malformed = await client.post("/v1/referrals", content=b"{not json", headers={**headers, "content-type": "application/json"})
        assert malformed.status_code == 422 and malformed.json()["code"] == "INVALID_REQUEST"
        with_a_name = await client.post("/v1/referrals", json=referral_body(finess, patient={"name": "Jeanne Martin"}), headers=headers)
        assert with_a_name.status_code == 422
        assert any(e["field"] == "body.patient.name" for e in with_a_name.json()["errors"])
        assert (await client.get(f"/v1/referrals/{uuid.uuid4()}", headers=token("desk", department="34"))).status_code == 404


async def test_the_referral_view_shows_the_whole_request_to_its_hospital_and_its_desk_only(referral_url):
    finess = unique_finess()
    body = full_referral_body(finess)
    async with httpx.AsyncClient(base_url=referral_url) as client:
        posted = await client.post("/v1/referrals", json=body, headers=token("hospital", finess=finess))
        assert posted.status_code == 201, posted.text
        referral_id = body["referral_id"]
        for reader in (token("hospital", finess=finess), token("desk", department="34"), token("admin")):
            view = (await client.get(f"/v1/referrals/{referral_id}", headers=reader)).json()
            for section in ("source", "patient", "clinical", "conditions", "avis"):
                assert view[section] == body[section], section
            for stamp in ("ed_arrival_at", "desired_admission_at"):
                assert datetime.fromisoformat(view[stamp]) == datetime.fromisoformat(body[stamp]), stamp
            assert view["department"] == "34" and view["status"] == "REQUESTED" and view["closed_reason"] is None
            assert "birth_date" not in view["patient"]
        assert posted.json() == view, "the answer to the post is the same view"
        for outsider in (token("desk", department="31"), token("hospital", finess=unique_finess()),
                         token("had", finess=unique_finess())):
            assert (await client.get(f"/v1/referrals/{referral_id}", headers=outsider)).status_code == 404
        timeline = (await client.get(f"/v1/referrals/{referral_id}/timeline", headers=token("desk", department="34"))).json()
        assert [(e["type"], e["actor"]) for e in timeline["events"]] == [("ReferralRequested", f"ehpad:{finess}")]


async def test_idempotent_on_the_clients_referral_id(referral_url, topics):
    finess = unique_finess()
    headers = token("hospital", finess=finess)
    body = referral_body(finess, requested_at="2026-11-22T08:00:00+00:00")
    async with httpx.AsyncClient(base_url=referral_url) as client:
        first = await client.post("/v1/referrals", json=body, headers=headers)
        again = await client.post("/v1/referrals", json=body, headers=headers)
        different = await client.post("/v1/referrals", json={**body, "clinical": {**body["clinical"], "main_mpp": "04"}}, headers=headers)
    assert first.status_code == 201 and first.json()["status"] == "REQUESTED"
    assert first.json()["department"] == "34"
    assert again.status_code == 200 and again.json()["referral_id"] == body["referral_id"]
    assert different.status_code == 409 and different.json()["code"] == "DUPLICATE_REFERRAL_ID"
    async def requested_events():
        return await read_all(topics, REFERRAL_EVENTS.name, lambda e: e.type == "reflexe.v1.ReferralRequested"
                              and e.message.header.referral_id == body["referral_id"])

    published = await eventually(requested_events, timeout=20, interval=0.5, what="the ReferralRequested event")
    assert len(published) == 1
    assert published[0].message.request.patient.pseudonym == body["patient"]["pseudonym"]


async def test_a_poison_submission_goes_to_the_dead_letter_topic(referral_url, topics):
    from aiokafka import AIOKafkaProducer

    marker = uuid.uuid4().hex.encode()
    hospital = await register_system(topics.kafka(), unique_finess(), "hospital")
    # Straight onto Kafka, as the hospital's own system, on its own inbound topic.
    producer = AIOKafkaProducer(**topics.kafka().as_principal(hospital.principal, hospital.password).options())
    await producer.start()
    try:
        await producer.send_and_wait(hospital.topic, b"\x00garbage" + marker)
    finally:
        await producer.stop()
    [record] = await dead_letters(topics, lambda r: bool(r.value) and marker in r.value,
                                  what="the poison record on the dead-letter topic")
    headers = dict(record.headers)
    assert b"missing CloudEvents headers" in headers["dlq_reason"]
    assert headers["dlq_topic"] == hospital.topic.encode()
    # the consumer is alive: a valid referral posted afterwards is still processed by the API path
    async with httpx.AsyncClient(base_url=referral_url) as client:
        assert (await client.get("/readyz")).status_code == 200
