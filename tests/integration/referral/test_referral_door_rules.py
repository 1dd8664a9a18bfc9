"""Rules checked at the door, on the real broker and database: a FINESS with a wrong key, an MPP
code outside the list and an MPP incoherent with the patient get a 422 naming the field on the
REST door, and the same referral published on Kafka goes to the dead-letter topic with the field
in its reason (one domain rule, whatever the door)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from reflexe.v1 import submission_pb2

from reflexe_common.envelope import wrap
from reflexe_common.kafka_acls import register_system
from reflexe_referral.adapters.codec import request_to_proto
from reflexe_referral.entrypoints.app import build_app
from reflexe_referral.entrypoints.schemas import ReferralIn
from reflexe_referral.settings import ReferralSettings
from tests.support.data import referral_body, unique_finess, with_wrong_key
from tests.support.kafka import dead_letters
from tests.support.platform import in_process_env
from tests.support.services import eventually, serve_in_process, token

pytestmark = pytest.mark.integration
THIS_YEAR = datetime.now(UTC).year


@pytest.fixture(scope="module")
async def referral(topics):
    settings = ReferralSettings(**in_process_env(topics))
    async with serve_in_process(build_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


INCOHERENT = [
    # (what is changed, the field the answer names)
    ({"clinical": {"main_mpp": "3", "associated_mpp": []}}, "body.clinical.main_mpp"),  # "03" mistyped
    ({"clinical": {"associated_mpp": ["9"]}}, "body.clinical.associated_mpp[0]"),
    ({"clinical": {"main_mpp": "19", "associated_mpp": []}, "patient": {"sex": "M", "birth_year": 1990}},
     "body.clinical.main_mpp"),  # pregnancy follow-up for a man
    ({"clinical": {"main_mpp": "21", "associated_mpp": []}, "patient": {"sex": "F", "birth_year": 1941}},
     "body.clinical.main_mpp"),  # post-partum at 80+
    ({"clinical": {"main_mpp": "22", "associated_mpp": [], "karnofsky": 60}, "patient": {"birth_year": THIS_YEAR - 4}},
     "body.clinical.main_mpp"),  # newborn code for a child surely 3 or older
    ({"clinical": {"main_mpp": "14", "associated_mpp": [], "karnofsky": 70}}, "body.clinical.karnofsky"),
]


@pytest.mark.parametrize(("changes", "field"), INCOHERENT)
async def test_an_mpp_outside_the_list_or_incoherent_with_the_patient_is_422_naming_the_field(referral, changes, field):
    hospital = unique_finess()
    refused = await referral.post("/v1/referrals", json=referral_body(hospital, **changes),
                                  headers=token("hospital", finess=hospital))
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "INVALID_REFERRAL"
    assert [e["field"] for e in refused.json()["errors"]] == [field]


async def test_the_coherent_cases_are_taken(referral):
    hospital = unique_finess()
    headers = token("hospital", finess=hospital)
    for changes in ({"clinical": {"main_mpp": "22", "associated_mpp": [], "karnofsky": 60},
                     "patient": {"birth_year": THIS_YEAR - 3}},  # may still be 2
                    {"clinical": {"main_mpp": "19", "associated_mpp": []}, "patient": {"sex": "F", "birth_year": 1994}},
                    {"clinical": {"main_mpp": "14", "associated_mpp": [], "karnofsky": 50}}):
        taken = await referral.post("/v1/referrals", json=referral_body(hospital, **changes), headers=headers)
        assert taken.status_code == 201, taken.text


async def test_a_finess_with_a_wrong_key_is_422_naming_the_field(referral):
    hospital = unique_finess()
    wrong = with_wrong_key(hospital)  # the hospital's system mistyped its own FINESS
    refused = await referral.post("/v1/referrals", json=referral_body(wrong), headers=token("hospital", finess=wrong))
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["body.source.finess"]
    assert "Luhn key" in refused.json()["errors"][0]["message"]
    at_ehpad = referral_body(hospital, patient={"place_of_care": "EHPAD", "ehpad_finess": with_wrong_key(unique_finess())})
    refused = await referral.post("/v1/referrals", json=at_ehpad, headers=token("hospital", finess=hospital))
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["body.patient.ehpad_finess"]
    posted = await referral.post("/v1/referrals", json=referral_body(hospital), headers=token("hospital", finess=hospital))
    assert posted.status_code == 201, posted.text
    offered = await referral.post(f"/v1/referrals/{posted.json()['referral_id']}/desk/offer",
                                  json={"had_finess": with_wrong_key(unique_finess())}, headers=token("desk", department="34"))
    assert offered.status_code == 422, offered.text
    assert [e["field"] for e in offered.json()["errors"]] == ["body.had_finess"]


async def _publish(topics, system, envelope) -> None:
    """As the system, on its inbound topic. A principal just registered may be refused for a moment
    (the broker applies new credentials asynchronously): connecting is retried until accepted."""
    async def connected():
        producer = AIOKafkaProducer(**topics.kafka().as_principal(system.principal, system.password).options(),
                                    acks="all")
        try:
            await producer.start()
        except KafkaConnectionError:
            await producer.stop()
            return None
        return producer

    producer = await eventually(connected, timeout=30, what=f"{system.principal}'s credentials accepted")
    try:
        await producer.send_and_wait(system.topic, envelope.value(), headers=envelope.headers())
    finally:
        await producer.stop()


async def _dead_letter_reason(topics, hospital, message) -> str:
    envelope = wrap(message, f"system/{hospital.principal}")
    await _publish(topics, hospital, envelope)
    [record] = await dead_letters(topics, lambda r: dict(r.headers).get("ce_id") == envelope.id.encode(),
                                  what=f"submission {envelope.id} on the dead-letter topic")
    headers = dict(record.headers)
    return headers["dlq_reason"].decode()


def _submission(hospital: str, **changes) -> submission_pb2.SubmitReferral:
    body = referral_body(hospital, **changes)
    request = ReferralIn.model_validate(body).to_domain("34", body["referral_id"], datetime.now(UTC))
    return submission_pb2.SubmitReferral(request=request_to_proto(request), submitted_by=hospital)


async def test_the_same_rules_dead_letter_a_referral_published_on_kafka_with_the_field_in_the_reason(referral, topics):
    hospital = unique_finess()
    system = await register_system(topics.kafka(), hospital, "hospital")
    incoherent = _submission(hospital, clinical={"main_mpp": "19", "associated_mpp": []},
                             patient={"sex": "M", "birth_year": 1990})
    reason = await _dead_letter_reason(topics, system, incoherent)
    assert "clinical.main_mpp" in reason and "female patient" in reason
    unknown_code = _submission(hospital)
    unknown_code.request.clinical.main_mpp = "3"
    reason = await _dead_letter_reason(topics, system, unknown_code)
    assert "clinical.main_mpp" in reason and "unknown MPP code" in reason
    wrong_key = _submission(hospital)
    wrong_key.request.patient.place_of_care = "EHPAD"
    wrong_key.request.patient.ehpad_finess = with_wrong_key(unique_finess())
    reason = await _dead_letter_reason(topics, system, wrong_key)
    assert "patient.ehpad_finess" in reason and "Luhn key" in reason
    heavy = _submission(hospital, clinical={"main_mpp": "14", "associated_mpp": [], "karnofsky": 80})
    reason = await _dead_letter_reason(topics, system, heavy)
    assert "clinical.karnofsky" in reason


async def test_one_submit_path_whatever_the_door_kafka_then_rest_is_one_referral(referral, topics):
    """A referral published on Kafka, then posted over REST with the same body, is one referral
    (200, not a second); another body under its id is refused at both doors, and so is an unknown
    commune, with the same reasons."""
    hospital = unique_finess()
    system = await register_system(topics.kafka(), hospital, "hospital")
    headers = token("hospital", finess=hospital)
    body = referral_body(hospital, requested_at="2026-11-26T08:00:00+00:00")
    published = _submission(hospital, requested_at=body["requested_at"], referral_id=body["referral_id"],
                            patient=body["patient"])
    await _publish(topics, system, wrap(published, f"system/{system.principal}"))

    async def opened():
        answer = await referral.get(f"/v1/referrals/{body['referral_id']}", headers=headers)
        return answer if answer.status_code == 200 else None

    taken = await eventually(opened, timeout=30, what="the referral published on Kafka opened")
    assert taken.json()["department"] == "34"
    again = await referral.post("/v1/referrals", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["referral_id"] == body["referral_id"] and again.json()["version"] == taken.json()["version"]

    other = {**body, "clinical": {**body["clinical"], "karnofsky": 30}}
    refused = await referral.post("/v1/referrals", json=other, headers=headers)
    assert refused.status_code == 409 and refused.json()["code"] == "DUPLICATE_REFERRAL_ID"
    other_published = _submission(hospital, requested_at=body["requested_at"], referral_id=body["referral_id"],
                                  patient=body["patient"], clinical=other["clinical"])
    assert "exists with a different body" in await _dead_letter_reason(topics, system, other_published)

    nowhere = referral_body(hospital, patient={**body["patient"], "care_commune": "99999"})
    unknown = await referral.post("/v1/referrals", json=nowhere, headers=headers)
    assert unknown.status_code == 422 and [e["field"] for e in unknown.json()["errors"]] == ["body.patient.care_commune"]
    unknown_published = _submission(hospital, patient={**body["patient"], "care_commune": "99999"})
    assert "unknown INSEE code '99999' in patient.care_commune" in await _dead_letter_reason(topics, system,
                                                                                             unknown_published)
