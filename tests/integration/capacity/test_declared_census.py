"""The HAD's census (active patients, all of them) declared with its capacity, on the real broker
and database: through REST, FHIR and Kafka into one command; stored with the declaration, shown on
the department board, carried on the CapacityDeclared event; a bad census is refused naming the
field (REST 422, FHIR OperationOutcome, Kafka dead letter)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from reflexe.v1 import capacity_pb2

from reflexe_capacity.entrypoints import fhir_mapping as cm
from reflexe_capacity.entrypoints.app import build_app
from reflexe_capacity.settings import CapacitySettings
from reflexe_common.envelope import PoisonRecord, ts, unwrap, wrap
from reflexe_common.fhir import FHIR_JSON
from reflexe_common.kafka_acls import register_system
from reflexe_common.topics import CAPACITY_EVENTS
from tests.support.data import had_body, unique_finess
from tests.support.fhir_data import declared_figures, healthcare_service_declaration
from tests.support.kafka import dead_letters
from tests.support.platform import in_process_env
from tests.support.services import eventually, serve_in_process, token
from tests.support.territory import own_commune, own_department

pytestmark = pytest.mark.integration
ADMIN = token("admin")
# A department of this module's own HADs: its capacity board lists no other.
DEPARTMENT = own_department()
COMMUNE = own_commune(DEPARTMENT)


@pytest.fixture(scope="module")
async def capacity(topics):
    settings = CapacitySettings(**in_process_env(topics))
    async with serve_in_process(build_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


async def _register(capacity: httpx.AsyncClient) -> str:
    finess = unique_finess(DEPARTMENT)
    response = await capacity.put(f"/v1/hads/{finess}", json=had_body(f"HAD {finess}", [COMMUNE], DEPARTMENT, 60),
                                  headers=ADMIN)
    assert response.status_code == 200, response.text
    return finess


async def _history(capacity: httpx.AsyncClient, finess: str) -> list[dict]:
    response = await capacity.get(f"/v1/hads/{finess}/capacity/history", headers=token("had", finess=finess))
    assert response.status_code == 200, response.text
    return response.json()["declarations"]


async def _capacity_declared(topics, finess: str, count: int) -> list[capacity_pb2.CapacityDeclared]:
    consumer = AIOKafkaConsumer(CAPACITY_EVENTS.name, **topics.kafka_options(), auto_offset_reset="earliest")
    await consumer.start()
    found: list[capacity_pb2.CapacityDeclared] = []
    try:
        async def declared():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        message = unwrap(record.headers, record.value).message
                    except PoisonRecord:
                        continue
                    if isinstance(message, capacity_pb2.CapacityDeclared) and message.had_finess == finess:
                        found.append(message)
            return found if len(found) >= count else None
        return await eventually(declared, timeout=30, what=f"{count} CapacityDeclared of {finess}")
    finally:
        await consumer.stop()


async def test_a_census_declared_over_rest_is_stored_shown_and_carried_on_the_event(capacity, topics):
    finess = await _register(capacity)
    had = token("had", finess=finess)
    with_census = await capacity.post(f"/v1/hads/{finess}/capacity", headers=had, json={
        "places_available": 4, "admissions_possible_today": 2, "status": "OPEN", "active_patients": 57,
        "declared_at": "2026-11-20T08:00:00+00:00"})
    assert with_census.status_code == 201, with_census.text
    assert with_census.json()["active_patients"] == 57
    board = await capacity.get(f"/v1/departments/{DEPARTMENT}/capacity", headers=token("desk", department=DEPARTMENT))
    assert next(h for h in board.json()["hads"] if h["finess"] == finess)["active_patients"] == 57

    # A declaration without a census says nothing of it (not zero patients).
    without = await capacity.post(f"/v1/hads/{finess}/capacity", headers=had, json={
        "places_available": 3, "admissions_possible_today": 1, "status": "OPEN", "declared_at": "2026-11-20T09:00:00+00:00"})
    assert without.status_code == 201, without.text
    assert without.json()["active_patients"] is None
    assert [(d["places_available"], d["active_patients"]) for d in await _history(capacity, finess)] == [(3, None), (4, 57)]

    events = await _capacity_declared(topics, finess, 2)
    by_places = {e.places_available: e for e in events}
    assert by_places[4].HasField("active_patients") and by_places[4].active_patients == 57
    assert not by_places[3].HasField("active_patients")


@pytest.mark.parametrize("census", [-1, 10_001, "beaucoup", 2.5])
async def test_a_bad_census_over_rest_is_422_naming_the_field(capacity, census):
    finess = await _register(capacity)
    refused = await capacity.post(f"/v1/hads/{finess}/capacity", headers=token("had", finess=finess), json={
        "places_available": 4, "admissions_possible_today": 2, "status": "OPEN", "active_patients": census})
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["body.active_patients"]
    assert await _history(capacity, finess) == []


def _census_record(number: int | None = None, declared_at: str | None = None) -> dict:
    parts = [{"url": "capacityType", "valueCodeableConcept": {"coding": [{"system": cm.CAPACITY_TYPE_SYSTEM, "code": "patients"}]}},
             {"url": "capacityStatus", "valueCodeableConcept": {"coding": [{"system": cm.CAPACITY_COUNT_SYSTEM, "code": "declared"}]}}]
    if number is not None:
        parts.append({"url": "nbCapacity", "valueInteger": number})
    if declared_at is not None:
        parts.append({"url": "capacityUpdateDate", "valueDateTime": declared_at})
    return {"url": cm.EXT_CAPACITY, "extension": parts}


async def test_a_census_declared_over_fhir_is_the_same_declaration(capacity):
    finess = await _register(capacity)
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, **token("had", finess=finess)}
    resource = healthcare_service_declaration(finess, places=5, admissions=2)
    resource["extension"].insert(2, _census_record(41))
    put = await capacity.put(f"/fhir/HealthcareService/{finess}", json=resource, headers=headers)
    assert put.status_code == 200, put.text
    assert declared_figures(put.json())[("patients", "declared")] == 41
    assert [(d["active_patients"], d["channel"]) for d in await _history(capacity, finess)] == [(41, "fhir")]
    board = await capacity.get(f"/v1/departments/{DEPARTMENT}/capacity", headers=token("desk", department=DEPARTMENT))
    assert next(h for h in board.json()["hads"] if h["finess"] == finess)["active_patients"] == 41

    for bad, expression in [(_census_record(-3), "HealthcareService.extension[2].extension('nbCapacity')"),
                            (_census_record(), "HealthcareService.extension[2].extension('nbCapacity')")]:
        sent = copy.deepcopy(healthcare_service_declaration(finess, places=1))
        sent["extension"].insert(2, bad)
        refused = await capacity.put(f"/fhir/HealthcareService/{finess}", json=sent, headers=headers)
        assert refused.status_code == 422, refused.text
        outcome = refused.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert expression in {e for issue in outcome["issue"] for e in issue.get("expression", [])}, refused.text
    assert len(await _history(capacity, finess)) == 1  # nothing refused was recorded


async def test_a_census_declared_on_kafka_is_stored_and_a_bad_one_dead_lettered(capacity, topics):
    finess = await _register(capacity)
    had = await register_system(topics.kafka(), finess, "had")
    producer = AIOKafkaProducer(**topics.kafka().as_principal(had.principal, had.password).options())
    await producer.start()
    try:
        for places, census, at in ((2, -5, datetime(2026, 11, 20, 7, 0, tzinfo=UTC)),
                                   (6, 23, datetime(2026, 11, 20, 8, 0, tzinfo=UTC))):
            envelope = wrap(capacity_pb2.DeclareCapacity(had_finess=finess, places_available=places, admissions_possible_today=1,
                                                         status="OPEN", declared_at=ts(at), active_patients=census),
                            f"had/{finess}")
            await producer.send_and_wait(had.topic, envelope.value(), headers=envelope.headers())
    finally:
        await producer.stop()

    async def stored():
        return await _history(capacity, finess) or None
    declarations = await eventually(stored, timeout=30, what="the Kafka declaration with its census")
    assert [(d["places_available"], d["active_patients"], d["channel"]) for d in declarations] == [(6, 23, "kafka")]

    [record] = await dead_letters(topics, lambda r: bool(r.value) and finess.encode() in r.value
                                  and dict(r.headers).get("dlq_topic") == had.topic.encode(),
                                  what="the negative census on the dead-letter topic")
    assert b"active_patients" in dict(record.headers)["dlq_reason"]
