"""The referral service's FHIR R4 API on the real broker and database. Every resource a test sends
or receives goes through HAPI FHIR's official validator (offline): 0 errors. The FHIR calls are
checked against the REST API's view of the same referral: one path for commands."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from reflexe.v1 import matching_pb2

from reflexe_common.envelope import ts, wrap
from reflexe_common.topics import MATCHING_EVENTS
from reflexe_referral.entrypoints import fhir_mapping as fm
from reflexe_referral.entrypoints.app import build_app
from reflexe_referral.settings import ReferralSettings
from tests.support.data import unique_finess
from tests.support.fhir_data import service_request_resource
from tests.support.fhir_validator import checked, expressions
from tests.support.platform import in_process_env
from tests.support.services import eventually, serve_in_process, token

pytestmark = pytest.mark.integration
FHIR = {"Content-Type": fm.FHIR_JSON, "Accept": fm.FHIR_JSON}


@pytest.fixture(scope="module")
async def referral_url(topics):
    settings = ReferralSettings(**in_process_env(topics))
    async with serve_in_process(build_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
async def producer(topics):
    p = AIOKafkaProducer(**topics.kafka_options(), acks="all", linger_ms=0)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def client(referral_url):
    async with httpx.AsyncClient(base_url=referral_url, timeout=30) as c:
        yield c


async def post_referral(client, validator, hospital: str, resource: dict | None = None, **headers) -> tuple[dict, httpx.Response]:
    resource = resource or service_request_resource(hospital)
    validator.assert_valid(resource)  # what the API accepts is valid FHIR R4 too
    referral_id = resource["identifier"][0]["value"]
    response = await client.post("/fhir/ServiceRequest", json=resource, headers={
        **FHIR, **token("hospital", finess=hospital),
        "If-None-Exist": f"identifier={fm.REFERRAL_ID_SYSTEM}|{referral_id}", **headers})
    return resource, response


async def offer(producer, referral_id: str, had: str) -> str:
    """What the matcher publishes when it holds a place at `had`: the referral service's own
    consumer records the offer, as in production."""
    offer_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    message = matching_pb2.OfferProposed(
        referral_id=referral_id, department="34", occurred_at=ts(now), offer_id=offer_id, had_finess=had,
        hold_id=str(uuid.uuid4()), hold_until=ts(now + timedelta(minutes=30)), explanation="HAD la plus proche",
        by_desk=False)
    envelope = wrap(message, "tests")
    await producer.send_and_wait(MATCHING_EVENTS.name, envelope.value(), key=b"34", headers=envelope.headers())
    return offer_id


async def open_task(client, validator, had: str, referral_id: str) -> dict:
    async def listed():
        response = await client.get("/fhir/Task", params={"owner": f"Organization/{had}", "status": "requested"},
                                    headers=token("had", finess=had))
        bundle = checked(validator, response, 200, "Bundle")
        return next((e["resource"] for e in bundle.get("entry", []) if e["resource"]["id"] == referral_id), None)
    return await eventually(listed, what="the offer as the HAD's open Task")


async def test_conditional_create_201_then_200_and_the_rest_api_sees_the_same_referral(client, validator):
    hospital = unique_finess()
    resource, first = await post_referral(client, validator, hospital)
    created = checked(validator, first, 201, "ServiceRequest")
    referral_id = resource["identifier"][0]["value"]
    assert created["id"] == referral_id and created["status"] == "active"
    assert first.headers["location"].endswith(f"/fhir/ServiceRequest/{referral_id}/_history/1")
    assert created["contained"][0]["identifier"] == resource["contained"][0]["identifier"]
    _, again = await post_referral(client, validator, hospital, resource)
    assert checked(validator, again, 200, "ServiceRequest") == created

    rest = await client.get(f"/v1/referrals/{referral_id}", headers=token("hospital", finess=hospital))
    assert rest.status_code == 200
    view = rest.json()
    assert (view["status"], view["source"]["finess"], view["clinical"]["main_mpp"], view["patient"]["pseudonym"]) == (
        "REQUESTED", hospital, "03", resource["contained"][0]["identifier"][0]["value"])
    read = await client.get(f"/fhir/ServiceRequest/{referral_id}", headers=token("hospital", finess=hospital))
    assert checked(validator, read, 200, "ServiceRequest") == created
    desk = await client.get(f"/fhir/ServiceRequest/{referral_id}", headers=token("desk", department="34"))
    assert checked(validator, desk, 200, "ServiceRequest") == created  # the desk reads the whole request too
    other = await client.get(f"/fhir/ServiceRequest/{referral_id}", headers=token("hospital", finess=unique_finess()))
    assert "not-found" == checked(validator, other, 404, "OperationOutcome")["issue"][0]["code"]

    changed = copy.deepcopy(resource)
    changed["code"]["coding"][0]["code"] = "04"
    _, conflict = await post_referral(client, validator, hospital, changed)
    assert checked(validator, conflict, 409, "OperationOutcome")["issue"][0]["code"] == "conflict"

    second, _ = await post_referral(client, validator, hospital)
    both = f"{fm.REFERRAL_ID_SYSTEM}|{referral_id},{fm.REFERRAL_ID_SYSTEM}|{second['identifier'][0]['value']}"
    _, several = await post_referral(client, validator, hospital, service_request_resource(hospital, referral_id),
                                     **{"If-None-Exist": f"identifier={both}"})
    assert checked(validator, several, 412, "OperationOutcome")["issue"][0]["code"] == "multiple-matches"


async def test_errors_are_operation_outcomes_naming_the_element(client, validator):
    hospital = unique_finess()
    headers = {**FHIR, **token("hospital", finess=hospital)}

    def with_extension(url: str, **value) -> dict:
        resource = service_request_resource(hospital)
        resource["extension"] = [e for e in resource["extension"] if e["url"] != url] + [{"url": url, **value}]
        return resource

    unknown_mpp = service_request_resource(hospital, code={"coding": [{"system": fm.MPP_SYSTEM, "code": "99"}]})
    unknown_commune = with_extension(fm.EXT_CARE_COMMUNE, valueCode="34999")
    bad_karnofsky = with_extension(fm.EXT_KARNOFSKY, valueInteger=55)
    nir_in_unit = with_extension(fm.EXT_SOURCE_UNIT, valueString="patient 2 41 03 34 172 005 12")
    # The rules at the door (docs/domain.md): a FINESS whose key is wrong, an MPP the patient cannot have.
    wrong_key = service_request_resource(hospital[:8] + str((int(hospital[8]) + 1) % 10))
    pregnancy_of_a_man = service_request_resource(hospital, code={"coding": [{"system": fm.MPP_SYSTEM, "code": "19"}]})
    pregnancy_of_a_man["contained"][0]["gender"] = "male"
    for resource, expression in [(wrong_key, "ServiceRequest.requester.identifier.value"),
                                 (pregnancy_of_a_man, "ServiceRequest.code"),
                                 (unknown_mpp, "ServiceRequest.code"),
                                 (unknown_commune, f"ServiceRequest.extension('{fm.EXT_CARE_COMMUNE}')"),
                                 (bad_karnofsky, f"ServiceRequest.extension('{fm.EXT_KARNOFSKY}')"),
                                 (nir_in_unit, f"ServiceRequest.extension('{fm.EXT_SOURCE_UNIT}')")]:
        validator.assert_valid(resource)
        response = await client.post("/fhir/ServiceRequest", json=resource, headers=headers)
        assert expression in expressions(checked(validator, response, 422, "OperationOutcome")), response.text

    named = service_request_resource(hospital)
    named["contained"][0]["name"] = [{"family": "Martin", "given": ["Jeanne"]}]
    response = await client.post("/fhir/ServiceRequest", json=named, headers=headers)
    assert "ServiceRequest.contained[0].name" in expressions(checked(validator, response, 422, "OperationOutcome"))
    assert "Martin" not in response.text

    not_fhir = await client.post("/fhir/ServiceRequest", json={**service_request_resource(hospital), "colour": "blue"},
                                 headers=headers)
    assert "ServiceRequest.colour" in expressions(checked(validator, not_fhir, 400, "OperationOutcome"))
    malformed = await client.post("/fhir/ServiceRequest", content=b"{not json", headers=headers)
    checked(validator, malformed, 400, "OperationOutcome")
    xml = await client.post("/fhir/ServiceRequest", content=b"<ServiceRequest/>",
                            headers={**headers, "Content-Type": "application/fhir+xml"})
    checked(validator, xml, 415, "OperationOutcome")

    as_another = await client.post("/fhir/ServiceRequest", json=service_request_resource(unique_finess()), headers=headers)
    checked(validator, as_another, 403, "OperationOutcome")
    as_had = await client.post("/fhir/ServiceRequest", json=service_request_resource(hospital),
                               headers={**FHIR, **token("had", finess=hospital)})
    checked(validator, as_had, 403, "OperationOutcome")
    for method, path in [("POST", "/fhir/ServiceRequest"), ("GET", "/fhir/metadata"), ("GET", "/fhir/Task?focus=x"),
                         ("GET", f"/fhir/ServiceRequest/{uuid.uuid4()}"), ("PUT", f"/fhir/Task/{uuid.uuid4()}"),
                         ("PUT", f"/fhir/ServiceRequest/{uuid.uuid4()}")]:
        anonymous = await client.request(method, path, json={}, headers={"Content-Type": fm.FHIR_JSON})
        assert checked(validator, anonymous, 401, "OperationOutcome")["issue"][0]["code"] == "login", (method, path)
        assert anonymous.headers["www-authenticate"] == "Bearer"


async def test_an_had_accepts_its_offer_by_updating_the_task(client, validator, producer):
    hospital, had, other_had = unique_finess(), unique_finess(), unique_finess()
    resource, response = await post_referral(client, validator, hospital)
    referral_id = checked(validator, response, 201, "ServiceRequest")["id"]
    offer_id = await offer(producer, referral_id, had)

    task = await open_task(client, validator, had, referral_id)
    assert (task["status"], task["owner"]["identifier"]["value"], fm.offer_id_of(task)) == ("requested", had, offer_id)
    by_focus = await client.get("/fhir/Task", params={"focus": f"ServiceRequest/{referral_id}"},
                                headers=token("hospital", finess=hospital))
    assert [e["resource"] for e in checked(validator, by_focus, 200, "Bundle")["entry"]] == [task]
    seen_by_had = await client.get(f"/fhir/ServiceRequest/{referral_id}", headers=token("had", finess=had))
    assert checked(validator, seen_by_had, 200, "ServiceRequest")["contained"][0]["gender"] == "female"

    # Another HAD: not its offer, not its Task, not its search.
    other = token("had", finess=other_had)
    assert checked(validator, await client.get(f"/fhir/Task/{referral_id}", headers=other), 404, "OperationOutcome")
    own = await client.get("/fhir/Task", params={"owner": f"Organization/{other_had}", "status": "requested"}, headers=other)
    assert checked(validator, own, 200, "Bundle")["total"] == 0
    foreign = await client.get("/fhir/Task", params={"owner": f"Organization/{had}", "status": "requested"}, headers=other)
    checked(validator, foreign, 403, "OperationOutcome")
    empty = await client.get("/fhir/Task", params={"focus": f"ServiceRequest/{referral_id}"}, headers=other)
    assert checked(validator, empty, 200, "Bundle")["total"] == 0
    stolen = {**task, "status": "accepted"}
    taken = await client.put(f"/fhir/Task/{referral_id}", json=stolen, headers={**FHIR, **other})
    checked(validator, taken, 404, "OperationOutcome")

    answer = {**task, "status": "accepted"}
    validator.assert_valid(answer)
    accepted = await client.put(f"/fhir/Task/{referral_id}", json=answer, headers={**FHIR, **token("had", finess=had)})
    after = checked(validator, accepted, 200, "Task")
    assert (after["status"], after["owner"]["identifier"]["value"]) == ("accepted", had)
    assert after["businessStatus"]["coding"][0]["code"] == "ACCEPTED"

    timeline = await client.get(f"/v1/referrals/{referral_id}/timeline", headers=token("hospital", finess=hospital))
    accepted_events = [e for e in timeline.json()["events"] if e["type"] == "OfferAccepted"]
    assert [(e["offer_id"], e["had_finess"], e["actor"]) for e in accepted_events] == [(offer_id, had, f"had:{had}")]
    again = await client.put(f"/fhir/Task/{referral_id}", json=answer, headers={**FHIR, **token("had", finess=had)})
    assert checked(validator, again, 409, "OperationOutcome")["issue"][0]["code"] == "conflict"
    still_open = await client.get("/fhir/Task", params={"owner": f"Organization/{had}", "status": "requested"},
                                  headers=token("had", finess=had))
    assert referral_id not in {e["resource"]["id"] for e in checked(validator, still_open, 200, "Bundle").get("entry", [])}


async def test_an_had_declines_with_a_reason_and_the_referral_goes_back_to_the_search(client, validator, producer):
    hospital, had = unique_finess(), unique_finess()
    _, response = await post_referral(client, validator, hospital)
    referral_id = checked(validator, response, 201, "ServiceRequest")["id"]
    await offer(producer, referral_id, had)
    task = await open_task(client, validator, had, referral_id)
    had_headers = {**FHIR, **token("had", finess=had)}

    no_reason = {**task, "status": "rejected"}
    validator.assert_valid(no_reason)
    refused = await client.put(f"/fhir/Task/{referral_id}", json=no_reason, headers=had_headers)
    assert "Task.statusReason" in expressions(checked(validator, refused, 422, "OperationOutcome"))
    no_offer = {k: v for k, v in task.items() if k != "input"} | {"status": "accepted"}
    refused = await client.put(f"/fhir/Task/{referral_id}", json=no_offer, headers=had_headers)
    assert "Task.input" in expressions(checked(validator, refused, 422, "OperationOutcome"))
    odd = await client.put(f"/fhir/Task/{referral_id}", json={**task, "status": "completed"}, headers=had_headers)
    assert "Task.status" in expressions(checked(validator, odd, 422, "OperationOutcome"))

    decline = {**task, "status": "rejected",
               "statusReason": {"coding": [{"system": fm.REASON_SYSTEM, "code": "NO_CAPACITY"}], "text": "complet ce soir"}}
    validator.assert_valid(decline)
    declined = await client.put(f"/fhir/Task/{referral_id}", json=decline, headers=had_headers)
    answer = checked(validator, declined, 200, "Task")
    assert (answer["status"], answer["statusReason"]["coding"][0]["code"]) == ("rejected", "NO_CAPACITY")

    rest = await client.get(f"/v1/referrals/{referral_id}/timeline", headers=token("hospital", finess=hospital))
    declines = [e for e in rest.json()["events"] if e["type"] == "OfferDeclined"]
    assert [(e["had_finess"], e["reason"]) for e in declines] == [(had, "NO_CAPACITY")]
    seen_by_hospital = await client.get(f"/fhir/Task/{referral_id}", headers=token("hospital", finess=hospital))
    back = checked(validator, seen_by_hospital, 200, "Task")
    assert back["status"] == "ready" and "owner" not in back
    gone = await client.get(f"/fhir/Task/{referral_id}", headers=token("had", finess=had))
    checked(validator, gone, 404, "OperationOutcome")  # an HAD that declined no longer sees the referral (REST rule)


def evaluation_step(task: dict, status: str, step: str | None, **changes) -> dict:
    """The Task as an HAD sends it back: a status and the evaluation step in its businessStatus,
    beside the referral status it read."""
    codings = [c for c in task["businessStatus"]["coding"] if c["system"] != fm.EVALUATION_SYSTEM]
    if step is not None:
        codings.append({"system": fm.EVALUATION_SYSTEM, "code": step})
    return {**task, "status": status, "businessStatus": {"coding": codings}, **changes}


def evaluation_codes(task: dict) -> list[str]:
    return [c["code"] for c in task["businessStatus"]["coding"] if c["system"] == fm.EVALUATION_SYSTEM]


async def events_of(client, referral_id: str, hospital: str) -> list[dict]:
    response = await client.get(f"/v1/referrals/{referral_id}/timeline", headers=token("hospital", finess=hospital))
    assert response.status_code == 200, response.text
    return response.json()["events"]


async def pending_evaluation(client, validator, producer) -> tuple[str, str, str, dict]:
    """A referral its HAD accepted through the Task subject to the evaluation: (hospital, had, id, Task answered)."""
    hospital, had = unique_finess(), unique_finess()
    _, response = await post_referral(client, validator, hospital)
    referral_id = checked(validator, response, 201, "ServiceRequest")["id"]
    await offer(producer, referral_id, had)
    task = await open_task(client, validator, had, referral_id)
    answer = evaluation_step(task, "accepted", fm.PENDING_EVALUATION)
    validator.assert_valid(answer)
    accepted = await client.put(f"/fhir/Task/{referral_id}", json=answer, headers={**FHIR, **token("had", finess=had)})
    return hospital, had, referral_id, checked(validator, accepted, 200, "Task")


async def test_an_had_accepts_pending_evaluation_then_confirms_through_the_task(client, validator, producer):
    hospital, had, referral_id, answered = await pending_evaluation(client, validator, producer)
    assert (answered["status"], answered["owner"]["identifier"]["value"]) == ("accepted", had)
    assert evaluation_codes(answered) == [fm.PENDING_EVALUATION]
    # Everyone who reads the Task sees the acceptance waiting for its evaluation; REST says the same.
    read = checked(validator, await client.get(f"/fhir/Task/{referral_id}", headers=token("hospital", finess=hospital)),
                   200, "Task")
    assert read["status"] == "accepted" and evaluation_codes(read) == [fm.PENDING_EVALUATION]
    rest = (await client.get(f"/v1/referrals/{referral_id}", headers=token("hospital", finess=hospital))).json()
    assert (rest["status"], rest["evaluation_pending"], rest["accepted_had"]) == ("ACCEPTED", True, had)
    accepted_events = [e for e in await events_of(client, referral_id, hospital) if e["type"] == "OfferAccepted"]
    assert [(e["had_finess"], e["pending_evaluation"]) for e in accepted_events] == [(had, True)]
    admission = await client.post(f"/v1/referrals/{referral_id}/admission", headers=token("had", finess=had))
    assert (admission.status_code, admission.json()["code"]) == (409, "EVALUATION_PENDING")

    confirm = evaluation_step(read, "accepted", fm.EVALUATION_CONFIRMED)
    validator.assert_valid(confirm)
    # Another HAD cannot confirm it: the referral is not its to know.
    foreign = await client.put(f"/fhir/Task/{referral_id}", json=confirm,
                               headers={**FHIR, **token("had", finess=unique_finess())})
    checked(validator, foreign, 404, "OperationOutcome")
    confirmed = await client.put(f"/fhir/Task/{referral_id}", json=confirm, headers={**FHIR, **token("had", finess=had)})
    answer = checked(validator, confirmed, 200, "Task")
    assert answer["status"] == "accepted" and evaluation_codes(answer) == [fm.EVALUATION_CONFIRMED]
    confirmations = [e for e in await events_of(client, referral_id, hospital) if e["type"] == "EvaluationConfirmed"]
    assert [(e["had_finess"], e["actor"]) for e in confirmations] == [(had, f"had:{had}")]
    after = checked(validator, await client.get(f"/fhir/Task/{referral_id}", headers=token("had", finess=had)), 200, "Task")
    assert after["status"] == "accepted" and evaluation_codes(after) == [fm.EVALUATION_CONFIRMED]
    again = await client.put(f"/fhir/Task/{referral_id}", json=confirm, headers={**FHIR, **token("had", finess=had)})
    assert checked(validator, again, 409, "OperationOutcome")["issue"][0]["code"] == "conflict"
    admitted = await client.post(f"/v1/referrals/{referral_id}/admission", headers=token("had", finess=had))
    assert admitted.status_code == 200, admitted.text


async def test_an_had_withdraws_an_acceptance_pending_evaluation_with_a_reason(client, validator, producer):
    hospital, had, referral_id, answered = await pending_evaluation(client, validator, producer)
    had_headers = {**FHIR, **token("had", finess=had)}
    no_reason = evaluation_step(answered, "rejected", fm.EVALUATION_WITHDRAWN)
    refused = await client.put(f"/fhir/Task/{referral_id}", json=no_reason, headers=had_headers)
    assert "Task.statusReason" in expressions(checked(validator, refused, 422, "OperationOutcome"))
    confused = evaluation_step(answered, "rejected", fm.PENDING_EVALUATION)
    refused = await client.put(f"/fhir/Task/{referral_id}", json=confused, headers=had_headers)
    assert "Task.businessStatus" in expressions(checked(validator, refused, 422, "OperationOutcome"))
    reason = {"coding": [{"system": fm.REASON_SYSTEM, "code": "MEDICAL_NOT_ELIGIBLE"}], "text": "domicile inadapté"}
    # A decline (no evaluation step) is not a withdrawal: there is no offer left to decline.
    decline = await client.put(f"/fhir/Task/{referral_id}", headers=had_headers, json=evaluation_step(
        answered, "rejected", None, statusReason=reason, input=[{"type": {"coding": [
            {"system": fm.TASK_INPUT_SYSTEM, "code": fm.OFFER_INPUT}]}, "valueString": str(uuid.uuid4())}]))
    checked(validator, decline, 409, "OperationOutcome")

    withdraw = evaluation_step(answered, "rejected", fm.EVALUATION_WITHDRAWN, statusReason=reason)
    validator.assert_valid(withdraw)
    foreign = await client.put(f"/fhir/Task/{referral_id}", json=withdraw,
                               headers={**FHIR, **token("had", finess=unique_finess())})
    checked(validator, foreign, 404, "OperationOutcome")  # another HAD cannot withdraw what is not its own
    withdrawn = await client.put(f"/fhir/Task/{referral_id}", json=withdraw, headers=had_headers)
    answer = checked(validator, withdrawn, 200, "Task")
    assert (answer["status"], answer["statusReason"]) == ("rejected", reason)
    assert [c["code"] for c in answer["businessStatus"]["coding"]] == [fm.EVALUATION_WITHDRAWN]
    withdrawals = [e for e in await events_of(client, referral_id, hospital) if e["type"] == "AcceptanceWithdrawn"]
    assert [(e["had_finess"], e["reason"], e["text"]) for e in withdrawals] == [(had, "MEDICAL_NOT_ELIGIBLE",
                                                                                  "domicile inadapté")]
    back = checked(validator, await client.get(f"/fhir/Task/{referral_id}", headers=token("hospital", finess=hospital)),
                   200, "Task")
    assert back["status"] == "ready" and "owner" not in back  # back to the search
    gone = await client.get(f"/fhir/Task/{referral_id}", headers=token("had", finess=had))
    checked(validator, gone, 404, "OperationOutcome")
    again = await client.put(f"/fhir/Task/{referral_id}", json=withdraw, headers=had_headers)
    checked(validator, again, 409, "OperationOutcome")


def with_consent(resource: dict, url: str, given: bool) -> dict:
    changed = copy.deepcopy(resource)
    for extension in changed["extension"]:
        if extension["url"] == url:
            extension["valueBoolean"] = given
    return changed


async def test_the_hospital_completes_its_referral_by_updating_the_service_request(client, validator):
    hospital = unique_finess()
    posted = with_consent(service_request_resource(hospital), fm.EXT_GP_AGREEMENT, False)
    _, response = await post_referral(client, validator, hospital, posted)
    referral_id = checked(validator, response, 201, "ServiceRequest")["id"]
    url, own = f"/fhir/ServiceRequest/{referral_id}", token("hospital", finess=hospital)
    read = await client.get(url, headers=own)
    current = checked(validator, read, 200, "ServiceRequest")
    assert read.headers["etag"] == f'W/"{current["meta"]["versionId"]}"'
    task = checked(validator, await client.get(f"/fhir/Task/{referral_id}", headers=own), 200, "Task")
    assert task["status"] == "draft"  # INCOMPLETE: waits for the GP's agreement
    agreed = with_consent(current, fm.EXT_GP_AGREEMENT, True)
    validator.assert_valid(agreed)

    blind = await client.put(url, json=agreed, headers={**FHIR, **own})
    assert "If-Match" in expressions(checked(validator, blind, 428, "OperationOutcome"))
    version = {"If-Match": read.headers["etag"]}
    other = await client.put(url, json=agreed, headers={**FHIR, **token("hospital", finess=unique_finess()), **version})
    checked(validator, other, 404, "OperationOutcome")  # another hospital's referral does not exist for it
    as_had = await client.put(url, json=agreed, headers={**FHIR, **token("had", finess=unique_finess()), **version})
    checked(validator, as_had, 403, "OperationOutcome")
    karnofsky = copy.deepcopy(agreed)
    karnofsky["extension"] = [e for e in karnofsky["extension"] if e["url"] != fm.EXT_KARNOFSKY] + [
        {"url": fm.EXT_KARNOFSKY, "valueInteger": 30}]
    refused = await client.put(url, json=karnofsky, headers={**FHIR, **own, **version})
    assert expressions(checked(validator, refused, 422, "OperationOutcome")) == {
        f"ServiceRequest.extension('{fm.EXT_KARNOFSKY}')"}

    updated = await client.put(url, json=agreed, headers={**FHIR, **own, **version})
    answer = checked(validator, updated, 200, "ServiceRequest")
    assert int(answer["meta"]["versionId"]) > int(current["meta"]["versionId"])
    assert updated.headers["etag"] == f'W/"{answer["meta"]["versionId"]}"'
    assert {e["url"]: e.get("valueBoolean") for e in answer["extension"]}[fm.EXT_GP_AGREEMENT] is True
    rest = (await client.get(f"/v1/referrals/{referral_id}", headers=own)).json()
    assert rest["conditions"]["gp_agreement"] is True and rest["status"] == "REQUESTED"
    updates = [e for e in await events_of(client, referral_id, hospital)
               if e["type"] in ("ReferralRequestUpdated", "ReferralCompleted")]
    assert [(e["type"], e["actor"]) for e in updates] == [("ReferralRequestUpdated", f"hospital:{hospital}"),
                                                          ("ReferralCompleted", f"hospital:{hospital}")]
    assert updates[0]["changed_fields"] == ["conditions.gp_agreement"]
    task = checked(validator, await client.get(f"/fhir/Task/{referral_id}", headers=own), 200, "Task")
    assert task["status"] == "ready"  # complete: the search starts

    stale = await client.put(url, json=agreed, headers={**FHIR, **own, **version})
    assert "If-Match" in expressions(checked(validator, stale, 412, "OperationOutcome"))
    fresh = {"If-Match": updated.headers["etag"]}
    withdrawn = with_consent(answer, fm.EXT_PATIENT_CONSENT, False)
    refused = await client.put(url, json=withdrawn, headers={**FHIR, **own, **fresh})
    assert checked(validator, refused, 409, "OperationOutcome")["issue"][0]["code"] == "conflict"  # a cancellation
    # The desk of the department updates through the same command (the caregiver's presence, here).
    desk = await client.put(url, json=with_consent(answer, fm.EXT_CAREGIVER, False),
                            headers={**FHIR, **token("desk", department="34"), **fresh})
    assert {e["url"]: e.get("valueBoolean") for e in checked(validator, desk, 200, "ServiceRequest")["extension"]}[
        fm.EXT_CAREGIVER] is False
    assert (await events_of(client, referral_id, hospital))[-1]["actor"] == "desk:34"


async def test_the_capability_statement_tells_what_is_implemented(client, validator, referral_url):
    response = await client.get("/fhir/metadata", headers=token("had", finess=unique_finess()))
    statement = checked(validator, response, 200, "CapabilityStatement")
    assert statement["fhirVersion"] == "4.0.1" and statement["format"] == ["json"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == {"ServiceRequest", "Task"}
    assert {i["code"] for i in resources["ServiceRequest"]["interaction"]} == {"create", "read", "update"}
    assert resources["ServiceRequest"]["versioning"] == "versioned-update"  # an update names the version read
    assert fm.EVALUATION_SYSTEM in resources["Task"]["documentation"]
    assert {i["code"] for i in resources["Task"]["interaction"]} == {"read", "update", "search-type"}
    # Each interaction it claims answers something other than 404/405 on this server.
    openapi = (await client.get("/openapi.json")).json()["paths"]
    assert {"/fhir/ServiceRequest", "/fhir/ServiceRequest/{referral_id}", "/fhir/Task", "/fhir/Task/{referral_id}",
            "/fhir/metadata"} <= set(openapi)
    assert set(openapi["/fhir/Task/{referral_id}"]) == {"get", "put"}
    assert set(openapi["/fhir/ServiceRequest"]) == {"post"}
    assert set(openapi["/fhir/ServiceRequest/{referral_id}"]) == {"get", "put"}
    unsupported = await client.get("/fhir/Task", params={"patient": "x"}, headers=token("desk", department="34"))
    checked(validator, unsupported, 400, "OperationOutcome")
