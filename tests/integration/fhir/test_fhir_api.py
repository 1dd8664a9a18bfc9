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
from tests.support.issuer import suite_issuer
from tests.support.services import eventually, serve_in_process, token

pytestmark = pytest.mark.integration
FHIR = {"Content-Type": fm.FHIR_JSON, "Accept": fm.FHIR_JSON}


@pytest.fixture(scope="module")
async def referral_url(topics):
    settings = ReferralSettings(KAFKA_BOOTSTRAP=topics.kafka_bootstrap, DATABASE_URL=topics.database_url,
                                OIDC_ISSUER=suite_issuer().url, LOG_LEVEL="WARNING")
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
                         ("GET", f"/fhir/ServiceRequest/{uuid.uuid4()}"), ("PUT", f"/fhir/Task/{uuid.uuid4()}")]:
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


async def test_the_capability_statement_tells_what_is_implemented(client, validator, referral_url):
    response = await client.get("/fhir/metadata", headers=token("had", finess=unique_finess()))
    statement = checked(validator, response, 200, "CapabilityStatement")
    assert statement["fhirVersion"] == "4.0.1" and statement["format"] == ["json"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == {"ServiceRequest", "Task"}
    assert {i["code"] for i in resources["ServiceRequest"]["interaction"]} == {"create", "read"}
    assert {i["code"] for i in resources["Task"]["interaction"]} == {"read", "update", "search-type"}
    # Each interaction it claims answers something other than 404/405 on this server.
    openapi = (await client.get("/openapi.json")).json()["paths"]
    assert {"/fhir/ServiceRequest", "/fhir/ServiceRequest/{referral_id}", "/fhir/Task", "/fhir/Task/{referral_id}",
            "/fhir/metadata"} <= set(openapi)
    assert set(openapi["/fhir/Task/{referral_id}"]) == {"get", "put"}
    assert set(openapi["/fhir/ServiceRequest"]) == {"post"}
    unsupported = await client.get("/fhir/Task", params={"patient": "x"}, headers=token("desk", department="34"))
    checked(validator, unsupported, 400, "OperationOutcome")
