"""The capacity service on the real broker and database: declarations from the future are
refused (REST 422, Kafka dead letter), lists are bounded, unknown departments are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from reflexe.v1 import capacity_pb2

from reflexe_capacity.entrypoints.app import build_app
from reflexe_capacity.settings import CapacitySettings
from reflexe_common.envelope import ts, wrap
from reflexe_common.kafka_acls import register_system
from tests.support.data import had_body, unique_finess
from tests.support.kafka import dead_letters
from tests.support.platform import in_process_env
from tests.support.services import eventually, serve_in_process, token
from tests.support.territory import own_commune

pytestmark = pytest.mark.integration
ADMIN = token("admin")
COMMUNE = own_commune()  # a zone of its own for this module's HADs


@pytest.fixture(scope="module")
async def capacity(topics):
    settings = CapacitySettings(**in_process_env(topics))
    async with serve_in_process(build_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def _register(capacity: httpx.AsyncClient) -> str:
    finess = unique_finess()
    response = await capacity.put(f"/v1/hads/{finess}", json=had_body(f"HAD {finess}", [COMMUNE]), headers=ADMIN)
    assert response.status_code == 200, response.text
    return finess


async def _declare(capacity: httpx.AsyncClient, finess: str, places: int, declared_at: datetime | None = None) -> httpx.Response:
    body = {"places_available": places, "admissions_possible_today": 1, "status": "OPEN"}
    if declared_at is not None:
        body["declared_at"] = declared_at.isoformat()
    return await capacity.post(f"/v1/hads/{finess}/capacity", json=body, headers=token("had", finess=finess))


async def test_a_declaration_from_the_future_is_refused_on_rest(capacity):
    finess = await _register(capacity)
    now = datetime.now(UTC)
    refused = await _declare(capacity, finess, 9, now + timedelta(hours=2))
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "DECLARED_IN_THE_FUTURE"
    assert [e["field"] for e in refused.json()["errors"]] == ["body.declared_at"]
    # Within the clock-skew tolerance a declaration is taken, and it is the current one.
    accepted = await _declare(capacity, finess, 4, now + timedelta(minutes=1))
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["declared_places"] == 4
    history = (await capacity.get(f"/v1/hads/{finess}/capacity/history", headers=token("had", finess=finess))).json()
    assert [d["places_available"] for d in history["declarations"]] == [4]


async def test_a_declaration_from_the_future_on_kafka_is_dead_lettered_with_its_reason(capacity, topics):
    finess = await _register(capacity)
    # Straight onto Kafka, as the HAD's own system, on its own inbound topic.
    had = await register_system(topics.kafka(), finess, "had")
    future = datetime.now(UTC) + timedelta(days=1)
    producer = AIOKafkaProducer(**topics.kafka().as_principal(had.principal, had.password).options())
    await producer.start()
    try:
        for places, at in ((7, future), (3, datetime.now(UTC))):
            envelope = wrap(capacity_pb2.DeclareCapacity(had_finess=finess, places_available=places, admissions_possible_today=1,
                                                         status="OPEN", declared_at=ts(at)), f"had/{finess}")
            await producer.send_and_wait(had.topic, envelope.value(), headers=envelope.headers())
    finally:
        await producer.stop()

    [record] = await dead_letters(topics, lambda r: bool(r.value) and finess.encode() in r.value
                                  and dict(r.headers).get("dlq_topic") == had.topic.encode(),
                                  what="the future declaration on the dead-letter topic")
    assert b"in the future" in dict(record.headers)["dlq_reason"]

    # The valid declaration after it was taken; the future one never became current.
    async def current():
        history = (await capacity.get(f"/v1/hads/{finess}/capacity/history", headers=token("had", finess=finess))).json()
        return history["declarations"] or None
    declarations = await eventually(current, timeout=30, what="the valid Kafka declaration")
    assert [d["places_available"] for d in declarations] == [3]


async def test_history_is_paginated_and_a_bad_limit_is_422_not_500(capacity):
    finess = await _register(capacity)
    start = datetime.now(UTC) - timedelta(hours=1)
    for minute in range(5):
        assert (await _declare(capacity, finess, minute, start + timedelta(minutes=minute))).status_code == 201
    had = token("had", finess=finess)
    first = (await capacity.get(f"/v1/hads/{finess}/capacity/history", params={"limit": 2}, headers=had)).json()
    assert [d["places_available"] for d in first["declarations"]] == [4, 3] and first["next_offset"] == 2
    last = (await capacity.get(f"/v1/hads/{finess}/capacity/history", params={"limit": 2, "offset": 4}, headers=had)).json()
    assert [d["places_available"] for d in last["declarations"]] == [0] and last["next_offset"] is None
    for limit in ("-1", "0", "201"):
        response = await capacity.get(f"/v1/hads/{finess}/capacity/history", params={"limit": limit}, headers=had)
        assert response.status_code == 422, (limit, response.text)
        assert [e["field"] for e in response.json()["errors"]] == ["query.limit"]


async def test_unknown_departments_are_refused(capacity):
    for department in ("99", "975", "987"):
        response = await capacity.get(f"/v1/departments/{department}/capacity", headers=ADMIN)
        assert response.status_code == 404 and response.json()["code"] == "UNKNOWN_DEPARTMENT", department
    board = await capacity.get("/v1/departments/34/capacity", params={"limit": 1}, headers=token("desk", department="34"))
    assert board.status_code == 200 and len(board.json()["hads"]) <= 1
    finess = unique_finess()
    response = await capacity.put(f"/v1/hads/{finess}", json=had_body("HAD", [COMMUNE], departments=["34", "975"]), headers=ADMIN)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.departments[1]"]
