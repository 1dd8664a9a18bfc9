"""The capacity service's FHIR R4 API on the real broker and database. Every resource a test sends
or receives goes through HAPI FHIR's official validator (offline): 0 errors. A declaration made as
a HealthcareService is checked against the REST API's view of the same HAD: one path for commands,
the same scope rules whatever the door."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from reflexe_capacity.entrypoints import fhir_mapping as cm
from reflexe_capacity.entrypoints.app import build_app
from reflexe_capacity.settings import CapacitySettings
from reflexe_common.fhir import FHIR_JSON, FINESS_SYSTEM
from reflexe_common.geography import Geography
from tests.support.data import had_body, unique_finess
from tests.support.fhir_data import capacity_status, declared_figures, healthcare_service_declaration, kind_and_count
from tests.support.fhir_validator import checked, expressions
from tests.support.platform import in_process_env
from tests.support.services import serve_in_process, token
from tests.support.territory import own_commune, own_department

pytestmark = pytest.mark.integration
FHIR = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
ADMIN = token("admin")
# A department of this module's own HADs (its board and its search list no other), and one with none.
DEPARTMENT, EMPTY_DEPARTMENT = own_department(), own_department()
REGION = Geography.load().department(DEPARTMENT).region_code
# A region other than the module's (its department is handed out at collection: Paris is possible).
OTHER_REGION = "84" if REGION == "11" else "11"
COMMUNE = own_commune(DEPARTMENT)


@pytest.fixture(scope="module")
async def capacity_url(topics):
    settings = CapacitySettings(**in_process_env(topics))
    async with serve_in_process(build_app(settings)) as url:
        yield url


@pytest.fixture
async def client(capacity_url):
    async with httpx.AsyncClient(base_url=capacity_url, timeout=30) as c:
        yield c


async def register(client: httpx.AsyncClient, places: int = 30) -> str:
    finess = unique_finess(DEPARTMENT)
    response = await client.put(f"/v1/hads/{finess}", json=had_body(f"HAD {finess}", [COMMUNE], DEPARTMENT, places),
                                headers=ADMIN)
    assert response.status_code == 200, response.text
    return finess


async def put(client, validator, finess: str, resource: dict, as_finess: str | None = None) -> httpx.Response:
    validator.assert_valid(resource)  # what the API is sent is valid FHIR R4 too
    return await client.put(f"/fhir/HealthcareService/{finess}", json=resource,
                            headers={**FHIR, **token("had", finess=as_finess or finess)})


async def test_an_had_declares_by_put_and_the_rest_api_sees_it(client, validator):
    finess = await register(client, places=30)
    read = await client.get(f"/fhir/HealthcareService/{finess}", headers=token("had", finess=finess))
    before = checked(validator, read, 200, "HealthcareService")
    assert before["id"] == finess and before["providedBy"]["identifier"] == {"system": FINESS_SYSTEM, "value": finess}
    assert (declared_figures(before), capacity_status(before)) == ({("places", "authorised"): 30}, "UNDECLARED")

    declared = await put(client, validator, finess, healthcare_service_declaration(finess, places=6, admissions=2))
    after = checked(validator, declared, 200, "HealthcareService")
    figures = declared_figures(after)
    assert (figures[("places", "declared")], figures[("places", "available")], figures[("admissions", "declared")],
            figures[("admissions", "available")], capacity_status(after)) == (6, 6, 2, 2, "OPEN")

    # The REST door sees the same declaration, recorded as made over FHIR.
    board = await client.get(f"/v1/departments/{DEPARTMENT}/capacity", headers=token("desk", department=DEPARTMENT))
    line = next(h for h in board.json()["hads"] if h["finess"] == finess)
    assert (line["declared_places"], line["live_places"], line["status"], line["stale"]) == (6, 6, "OPEN", False)
    history = await client.get(f"/v1/hads/{finess}/capacity/history", headers=token("had", finess=finess))
    assert [(d["places_available"], d["channel"]) for d in history.json()["declarations"]] == [(6, "fhir")]

    # Read, change the declared figures, send it back: the figures the platform computes are not read.
    again = copy.deepcopy(after)
    for extension in again["extension"]:
        if extension["url"] == cm.EXT_CAPACITY and kind_and_count(extension)[1] == "declared":
            extension["extension"] = [{**p, "valueInteger": 0} if p["url"] == "nbCapacity" else p
                                      for p in extension["extension"] if p["url"] != "capacityUpdateDate"]
        if extension["url"] == cm.EXT_CAPACITY_STATUS:
            extension["valueCodeableConcept"] = {"coding": [{"system": cm.STATUS_SYSTEM, "code": "SATURATED"}]}
    saturated = checked(validator, await put(client, validator, finess, again), 200, "HealthcareService")
    assert (declared_figures(saturated)[("places", "declared")], capacity_status(saturated)) == (0, "SATURATED")
    rest = await client.get(f"/v1/departments/{DEPARTMENT}/capacity", headers=token("desk", department=DEPARTMENT))
    assert next(h for h in rest.json()["hads"] if h["finess"] == finess)["status"] == "SATURATED"

    # A REST declaration shows on the FHIR read: one capacity, two doors.
    posted = await client.post(f"/v1/hads/{finess}/capacity", headers=token("had", finess=finess),
                               json={"places_available": 3, "admissions_possible_today": 1, "status": "OPEN"})
    assert posted.status_code == 201, posted.text
    desk_read = await client.get(f"/fhir/HealthcareService/{finess}", headers=token("desk", department=DEPARTMENT))
    assert declared_figures(checked(validator, desk_read, 200, "HealthcareService"))[("places", "declared")] == 3


async def test_scoping_mirrors_the_rest_api(client, validator):
    finess, neighbour = await register(client), await register(client)
    declaration = healthcare_service_declaration(finess, places=4)
    # Another HAD: neither its declaration nor its read; the HAD's capacity is unchanged.
    foreign = await put(client, validator, finess, declaration, as_finess=neighbour)
    assert checked(validator, foreign, 403, "OperationOutcome")["issue"][0]["code"] == "forbidden"
    other_read = await client.get(f"/fhir/HealthcareService/{finess}", headers=token("had", finess=neighbour))
    checked(validator, other_read, 403, "OperationOutcome")
    assert ("places", "declared") not in declared_figures(checked(
        validator, await client.get(f"/fhir/HealthcareService/{finess}", headers=token("had", finess=finess)), 200,
        "HealthcareService"))
    # Desks read their own department's HADs, the ARS its region's; neither declares.
    for reader, status in [(token("desk", department=DEPARTMENT), 200), (token("ars", region=REGION), 200),
                           (token("desk", department="34"), 403), (token("ars", region=OTHER_REGION), 403)]:
        response = await client.get(f"/fhir/HealthcareService/{finess}", headers=reader)
        checked(validator, response, status, "HealthcareService" if status == 200 else "OperationOutcome")
    as_desk = await client.put(f"/fhir/HealthcareService/{finess}", json=declaration,
                               headers={**FHIR, **token("desk", department=DEPARTMENT)})
    checked(validator, as_desk, 403, "OperationOutcome")
    unknown = unique_finess(DEPARTMENT)
    checked(validator, await client.get(f"/fhir/HealthcareService/{unknown}", headers=ADMIN), 404, "OperationOutcome")
    not_registered = await client.put(f"/fhir/HealthcareService/{unknown}", json=healthcare_service_declaration(unknown),
                                      headers={**FHIR, **token("had", finess=unknown)})
    checked(validator, not_registered, 404, "OperationOutcome")
    for method, path in [("GET", f"/fhir/HealthcareService/{finess}"), ("PUT", f"/fhir/HealthcareService/{finess}"),
                         ("GET", "/fhir/HealthcareService?department=48"), ("GET", "/fhir/metadata")]:
        anonymous = await client.request(method, path, json=declaration, headers={"Content-Type": FHIR_JSON})
        assert checked(validator, anonymous, 401, "OperationOutcome")["issue"][0]["code"] == "login", (method, path)
        assert anonymous.headers["www-authenticate"] == "Bearer"


async def test_a_desk_searches_the_hads_of_its_department(client, validator):
    first, second = await register(client), await register(client)
    declared = await put(client, validator, first, healthcare_service_declaration(first, places=2))
    checked(validator, declared, 200, "HealthcareService")
    response = await client.get("/fhir/HealthcareService", params={"department": DEPARTMENT},
                                headers=token("desk", department=DEPARTMENT))
    found = checked(validator, response, 200, "Bundle")
    services = {e["resource"]["id"]: e["resource"] for e in found["entry"]}
    assert {first, second} <= set(services) and found["total"] == len(found["entry"])
    assert all(DEPARTMENT in {a["identifier"]["value"] for a in s["coverageArea"]} for s in services.values())
    assert declared_figures(services[first])[("places", "declared")] == 2
    assert capacity_status(services[second]) == "UNDECLARED"
    assert found["entry"][0]["fullUrl"].endswith(f"/fhir/HealthcareService/{found['entry'][0]['resource']['id']}")
    by_ars = await client.get("/fhir/HealthcareService", params={"department": DEPARTMENT}, headers=token("ars", region=REGION))
    assert {first, second} <= {e["resource"]["id"] for e in checked(validator, by_ars, 200, "Bundle")["entry"]}

    other_desk = await client.get("/fhir/HealthcareService", params={"department": DEPARTMENT},
                                  headers=token("desk", department="34"))
    checked(validator, other_desk, 403, "OperationOutcome")
    as_had = await client.get("/fhir/HealthcareService", params={"department": DEPARTMENT}, headers=token("had", finess=first))
    checked(validator, as_had, 403, "OperationOutcome")
    empty = await client.get("/fhir/HealthcareService", params={"department": EMPTY_DEPARTMENT}, headers=ADMIN)
    assert "entry" not in checked(validator, empty, 200, "Bundle")
    no_such = await client.get("/fhir/HealthcareService", params={"department": "99"}, headers=ADMIN)
    checked(validator, no_such, 404, "OperationOutcome")
    for params in ({}, {"name": "HAD"}, {"department": DEPARTMENT, "active": "true"}):
        unsupported = await client.get("/fhir/HealthcareService", params=params, headers=token("desk", department=DEPARTMENT))
        assert checked(validator, unsupported, 400, "OperationOutcome")["issue"][0]["code"] == "not-supported", params


async def test_bad_declarations_are_operation_outcomes_naming_the_element(client, validator):
    finess = await register(client)
    status_expression = f"HealthcareService.extension('{cm.EXT_CAPACITY_STATUS}')"
    too_many = healthcare_service_declaration(finess, places=6000)
    from_the_future = healthcare_service_declaration(
        finess, declared_at=(datetime.now(UTC) + timedelta(hours=2)).isoformat(timespec="seconds"))
    date_only = healthcare_service_declaration(finess, declared_at=datetime.now(UTC).date().isoformat())
    no_status = healthcare_service_declaration(finess)
    no_status["extension"] = no_status["extension"][:2]
    for resource, expression in [
        (too_many, "HealthcareService.extension[0].extension('nbCapacity')"),
        (from_the_future, "HealthcareService.extension[0].extension('capacityUpdateDate')"),
        (date_only, "HealthcareService.extension[0].extension('capacityUpdateDate')"),
        (no_status, status_expression),
        (healthcare_service_declaration(finess, status="UNDECLARED"), status_expression),
    ]:
        response = await put(client, validator, finess, resource)
        outcome = checked(validator, response, 422, "OperationOutcome")
        assert expression in expressions(outcome), response.text
        assert outcome["issue"][0]["code"] == "invalid"
    history = await client.get(f"/v1/hads/{finess}/capacity/history", headers=token("had", finess=finess))
    assert history.json()["declarations"] == []  # nothing refused was recorded

    headers = {**FHIR, **token("had", finess=finess)}
    not_fhir = await client.put(f"/fhir/HealthcareService/{finess}", json={**healthcare_service_declaration(finess), "colour": "blue"},
                                headers=headers)
    assert "HealthcareService.colour" in expressions(checked(validator, not_fhir, 400, "OperationOutcome"))
    other_id = await client.put(f"/fhir/HealthcareService/{finess}", json=healthcare_service_declaration(unique_finess()),
                                headers=headers)
    assert "HealthcareService.id" in expressions(checked(validator, other_id, 400, "OperationOutcome"))
    malformed = await client.put(f"/fhir/HealthcareService/{finess}", content=b"{not json", headers=headers)
    checked(validator, malformed, 400, "OperationOutcome")
    xml = await client.put(f"/fhir/HealthcareService/{finess}", content=b"<HealthcareService/>",
                           headers={**headers, "Content-Type": "application/fhir+xml"})
    checked(validator, xml, 415, "OperationOutcome")


async def test_the_capability_statement_tells_what_is_implemented(client, validator):
    response = await client.get("/fhir/metadata", headers=token("desk", department=DEPARTMENT))
    statement = checked(validator, response, 200, "CapabilityStatement")
    assert statement["fhirVersion"] == "4.0.1" and statement["format"] == ["json"]
    [resource] = statement["rest"][0]["resource"]
    assert resource["type"] == "HealthcareService"
    assert {i["code"] for i in resource["interaction"]} == {"read", "update", "search-type"}
    assert [p["name"] for p in resource["searchParam"]] == ["department"]
    # Each interaction it claims is a route of this server, and nothing else is under /fhir.
    openapi = (await client.get("/openapi.json")).json()["paths"]
    assert {p for p in openapi if p.startswith("/fhir")} == {"/fhir/metadata", "/fhir/HealthcareService",
                                                             "/fhir/HealthcareService/{finess}"}
    assert set(openapi["/fhir/HealthcareService/{finess}"]) == {"get", "put"}
    assert set(openapi["/fhir/HealthcareService"]) == {"get"}
