"""Schemathesis against every service's OpenAPI, on the real broker and database.

Every operation of referral, capacity, indicators and notify is called with generated requests
(valid per the schema, valid with ids of data this module created, and invalid), each with the
token of a role drawn among all five (scoped to that data), and every answer must be no 5xx and
conform to the document: a documented status, content type, headers and body schema.

Cost: REFLEXE_FUZZ_EXAMPLES examples per operation (default 6: the suite's budget); set it to
e.g. 300 for a long run. Generation is derandomized, so CI sees the same requests every run.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error

from reflexe_common.geography import Geography
from reflexe_notify.adapters import store
from reflexe_notify.domain.desk import DeskEvent
from tests.support.data import had_body, referral_body, unique_finess
from tests.support.infra import Infra
from tests.support.services import NOTIFY_ENV, bearer, serve_in_process, service_env, token
from tests.support.territory import own_commune, own_department

pytestmark = [pytest.mark.integration,
              # schemathesis' own strategies draw from `random`; that is theirs to change, not ours
              pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")]

MAX_EXAMPLES = int(os.environ.get("REFLEXE_FUZZ_EXAMPLES", "6"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
ROLES = ("hospital", "had", "desk", "ars", "admin")
# A department of its own for what the fuzzing writes (no other test's list or stream holds it);
# its seeded HAD's zone, where no other test's referral is offered.
DEPARTMENT = own_department()
REGION = Geography.load().department(DEPARTMENT).region_code
COMMUNE = own_commune(DEPARTMENT)
# An event stream never ends: schemathesis reads it until this many seconds have passed.
STREAM_SECONDS = 1.5
# Generated callers must meet the checks, not the rate limit (its own tests are elsewhere).
UNLIMITED = {"RATE_LIMIT_PER_SECOND": "100000", "RATE_LIMIT_BURST": "100000"}

SERVICES = {
    "referral": ("reflexe_referral.entrypoints.app", "reflexe_referral.settings", "ReferralSettings"),
    "capacity": ("reflexe_capacity.entrypoints.app", "reflexe_capacity.settings", "CapacitySettings"),
    "indicators": ("reflexe_indicators.entrypoints.app", "reflexe_indicators.settings", "IndicatorsSettings"),
    "notify": ("reflexe_notify.entrypoints.app", "reflexe_notify.settings", "NotifySettings"),
}


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _build(service: str, env: dict[str, str]):
    app_module, settings_module, settings_class = SERVICES[service]
    with _environment(env):
        service_settings = getattr(importlib.import_module(settings_module), settings_class)()
        return importlib.import_module(app_module).build_app(service_settings)


def _operations(service: str) -> list[tuple[str, str]]:
    """The operations of a service's document, read from an app built without any I/O (the
    lifespan, which connects, is not entered), so that each is a test of its own."""
    env = {**NOTIFY_ENV, "KAFKA_BOOTSTRAP": "127.0.0.1:9", "DATABASE_URL": "postgresql://collect@127.0.0.1:9/collect",
           "OIDC_ISSUER": "http://127.0.0.1:9/collect"}
    document = _build(service, env).openapi()
    return [(method.upper(), path) for path, ops in document["paths"].items() for method in ops]


@dataclass
class World:
    """A running service and data of its own for the generated calls to land on."""

    url: str
    app: Any
    schema: Any
    scopes: dict[str, dict[str, str]]
    known: dict[str, str] = field(default_factory=dict)
    examples: int = 0


async def _seed(service: str, client: httpx.AsyncClient, hospital: str, had: str) -> dict[str, str]:
    """Ids the generated calls may use as path parameters, so that they reach real resources."""
    known = {"department": DEPARTMENT, "finess": had}
    if service == "referral":
        body = referral_body(hospital, COMMUNE)
        created = await client.post("/v1/referrals", json=body, headers=token("hospital", finess=hospital))
        assert created.status_code == 201, created.text
        known["referral_id"] = body["referral_id"]
    if service == "capacity":
        registered = await client.put(f"/v1/hads/{had}", json=had_body(f"HAD {had}", [COMMUNE], DEPARTMENT), headers=token("admin"))
        assert registered.status_code == 200, registered.text
    if service == "notify":
        subscribed = await client.post("/v1/subscriptions", json={
            "url": "http://127.0.0.1:9/fuzz", "events": ["offer.proposed"], "departments": [DEPARTMENT],
        }, headers=token("desk", department=DEPARTMENT))
        if subscribed.status_code == 201:
            known["subscription_id"] = subscribed.json()["subscription_id"]
    return known


class Worlds:
    """Each service started when its first operation is fuzzed and kept until the module ends:
    the operations come in random order, and restarting a service whenever the next operation is
    another's would cost more than the fuzzing."""

    def __init__(self, infra: Infra) -> None:
        self._infra = infra
        self._stack = AsyncExitStack()
        self._worlds: dict[str, World] = {}

    async def get(self, service: str) -> World:
        if service in self._worlds:
            return self._worlds[service]
        hospital, had = unique_finess(DEPARTMENT), unique_finess(DEPARTMENT)
        app = _build(service, {**service_env(self._infra), **UNLIMITED})
        url = await self._stack.enter_async_context(serve_in_process(app))
        client = await self._stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
        known = await _seed(service, client, hospital, had)
        schema = schemathesis.openapi.from_dict((await client.get("/openapi.json")).json())
        scopes = {"hospital": {"finess": hospital}, "had": {"finess": had}, "desk": {"department": DEPARTMENT},
                  "ars": {"region": REGION}, "admin": {}}
        self._worlds[service] = World(url, app, schema, scopes, known)
        return self._worlds[service]

    async def close(self) -> None:
        for service, world in self._worlds.items():
            print(f"\n{service}: {world.examples} generated requests")
        await self._stack.aclose()


@pytest.fixture(scope="module")
async def worlds(topics: Infra) -> AsyncIterator[Worlds]:
    running = Worlds(topics)
    yield running
    await running.close()


def _fuzz(world: World, method: str, path: str) -> None:
    operation = world.schema[path][method]
    path_names = [p.name for p in operation.path_parameters]
    known = {name: world.known[name] for name in path_names if name in world.known}
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if known:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known))
    if list(operation.iter_parameters()) or operation.body:
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    tokens = {role: {"Authorization": f"Bearer {bearer(role, **world.scopes[role])}"} for role in ROLES}
    timeout = STREAM_SECONDS if path.endswith("/stream") else 30

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies), role=st.sampled_from(ROLES))
    def run(case, role: str) -> None:
        world.examples += 1
        headers = tokens[role]
        response = case.call(base_url=world.url, headers=headers, timeout=timeout)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()


def _all_operations() -> list[Any]:
    return [pytest.param(service, method, path, id=f"{service}-{method} {path}")
            for service in SERVICES for method, path in _operations(service)]


def _read_stream(world: World, path: str, headers: dict[str, str]) -> str:
    case = world.schema[path]["GET"].Case(path_parameters={"department": DEPARTMENT}, query={"after": 0})
    response = case.call(base_url=world.url, headers=headers, timeout=STREAM_SECONDS)
    case.validate_response(response, checks=CHECKS, headers=headers)
    return response.text


async def test_the_desk_stream_events_meet_their_document(worlds: Worlds) -> None:
    """The generated calls read a stream that may be empty; this one has an event, so that
    what the document says of each event is checked on a real one."""
    world = await worlds.get("notify")
    async with world.app.state.pool.acquire() as conn, conn.transaction():
        await store.append_desk_event(conn, DeskEvent(DEPARTMENT, f"fuzz-{uuid.uuid4()}", "capacity.changed",
                                                      datetime.now(UTC), {"live_places": 1}))
    headers = {"Authorization": f"Bearer {bearer('desk', department=DEPARTMENT)}"}
    text = await asyncio.to_thread(_read_stream, world, "/v1/desks/{department}/stream", headers)
    assert "event: desk" in text, text


@pytest.mark.parametrize(("service", "method", "path"), _all_operations())
async def test_operation_meets_its_document(worlds: Worlds, service: str, method: str, path: str) -> None:
    world = await worlds.get(service)
    await asyncio.to_thread(_fuzz, world, method, path)
