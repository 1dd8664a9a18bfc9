"""Simulated establishments through their doors, against a fake platform (httpx mock transport)
and a recording MLLP sender: FHIR hospitals post ServiceRequests, ADT hospitals send the ED exit
and hospitalisations by HL7, FHIR HADs answer through their Task, HL7 HADs report admissions."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import random

import httpx
import jwt

from reflexe_gateway.domain.effects import Effect, SenderKind, effect_of
from reflexe_gateway.domain.hl7 import read_adt
from reflexe_gateway.domain.pseudonym import pseudonymise
from reflexe_simulator import fhir
from reflexe_simulator.actors import PARIS, Counters, SimClock, TrackedReferral, World, hospitalise, post_referral
from reflexe_simulator.adt import Ack, MllpSender
from reflexe_simulator.client import PlatformClient
from reflexe_simulator.doors import Doors
from reflexe_simulator.scenario import build_scenario
from reflexe_simulator.traffic import ReferralFactory

KEY = b"shared with the gateway, 32 bytes"


class ClaimsOnlyTokens:
    async def fetch(self, role, *, finess=None, department=None):
        claims = {"role": role, **({"finess": finess} if finess else {}), **({"department": department} if department else {})}
        return jwt.encode(claims, None, algorithm="none"), float("inf")


class FakeFhirPlatform:
    """Answers the FHIR API like the referral service: a Task awaiting the HAD's answer."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        path = request.url.path
        if request.method == "GET" and path.startswith("/fhir/Task/"):
            referral_id = path.rsplit("/", 1)[1]
            return httpx.Response(200, json={
                "resourceType": "Task", "id": referral_id, "status": "requested", "intent": "order",
                "input": [{"type": {"coding": [{"system": fhir.TASK_INPUT_SYSTEM, "code": fhir.OFFER_INPUT}]},
                           "valueString": "offer-from-the-task"}]})
        if path == "/fhir/ServiceRequest":
            return httpx.Response(201, json={"resourceType": "ServiceRequest"})
        return httpx.Response(200, json={"resourceType": "Task"} if path.startswith("/fhir/") else {})

    def of(self, method: str, prefix: str) -> list[httpx.Request]:
        return [c for c in self.calls if c.method == method and c.url.path.startswith(prefix)]


class RecordingSender(MllpSender):
    def __init__(self, counters) -> None:
        super().__init__("gateway", 0, counters)
        self.sent: list[tuple[str, str]] = []

    async def _exchange(self, sender, message, control_id):
        self.sent.append((sender, message))
        return Ack("AA")


def _world(doors: Doors):
    scenario = build_scenario(["34"], seed=2)
    counters = Counters()
    platform = FakeFhirPlatform()
    client = PlatformClient("http://ref", "http://cap", "http://not", ClaimsOnlyTokens(), counters, attempts=2, backoff=0,
                            transport=httpx.MockTransport(platform))
    adt = RecordingSender(counters)
    world = World(scenario, client, SimClock(datetime(2025, 3, 10, 10, tzinfo=PARIS), 1e6), counters, seed=2,
                  doors=doors, adt=adt, pseudonym_key=KEY)
    return world, platform, adt, counters


async def _settle(world, rounds=300):
    for _ in range(rounds):
        if not world.tasks:
            return
        await asyncio.sleep(0.02)


async def test_a_fhir_had_answers_through_its_task_and_an_hl7_had_reports_its_admissions():
    scenario = build_scenario(["34"], seed=2)
    had = scenario.hads[0].finess
    world, platform, adt, counters = _world(Doors(fhir_hads=frozenset({had}), hl7_hads=frozenset({had})))
    factory = ReferralFactory(scenario.departments["34"], random.Random(2), pseudonym_of=world.pseudonym_of)
    actor = world.hads[had]
    actor.background = 0
    hold = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    for i in range(60):
        generated = factory.make("ED", datetime.now(UTC), datetime.now(UTC), 60)
        await post_referral(world, generated)
        actor.on_offer({"referral_id": generated.referral_id, "offer_id": f"o{i}", "had_finess": had, "hold_until": hold})
    await _settle(world)
    puts = platform.of("PUT", "/fhir/Task/")
    assert puts and not [c for c in platform.calls if c.url.path.endswith(("/accept", "/decline", "/admission"))]
    for put in puts:
        task = json.loads(put.content)
        assert put.headers["content-type"] == fhir.FHIR_JSON
        assert task["status"] in ("accepted", "rejected") and task["id"] == put.url.path.rsplit("/", 1)[1]
        assert fhir.offer_id_of(task).startswith("o"), "the offer the HAD was told of, not the Task's stale one"
        if task["status"] == "rejected":
            assert task["statusReason"]["coding"][0]["system"] == fhir.REASON_SYSTEM
    assert counters["fhir_answers"] == len(puts) and counters["rest_answers"] == 0
    accepted = {put.url.path.rsplit("/", 1)[1] for put in puts if json.loads(put.content)["status"] == "accepted"}
    admissions = [read_adt(m) for s, m in adt.sent if s == had and "ADT^A01" in m]
    assert admissions and counters["hl7_had_admissions"] == len(admissions)
    for message in admissions:
        assert effect_of(message, SenderKind.HAD) is Effect.HAD_ADMITTED
        assert any(message.referral_hint == r.replace("-", "") for r in accepted)
    for task in list(world.tasks):
        task.cancel()
    await world.client.aclose()


async def test_a_fhir_hospital_posts_service_requests_and_an_adt_hospital_sends_ed_exits_and_hospitalisations():
    scenario = build_scenario(["34"], seed=2)
    hospital = scenario.departments["34"].hospitals[0].finess
    world, platform, adt, counters = _world(Doors(fhir_hospitals=frozenset({hospital}), hl7_hospitals=frozenset({hospital})))
    factory = ReferralFactory(scenario.departments["34"], random.Random(3), pseudonym_of=world.pseudonym_of)
    posted = []
    while len(posted) < 12:
        generated = factory.make("ED", datetime.now(UTC), datetime.now(UTC), 60)
        if generated.source.finess == hospital:
            posted.append(generated)
    for generated in posted[:-1]:
        await post_referral(world, generated)
    creates = platform.of("POST", "/fhir/ServiceRequest")
    assert len(creates) == 11 and counters["fhir_referrals"] == 11 and not platform.of("POST", "/v1/referrals")
    for create, generated in zip(creates, posted):
        assert create.headers["if-none-exist"] == fhir.if_none_exist(generated.referral_id)
        assert json.loads(create.content) == fhir.service_request(generated.body)
    # The last one is hospitalised while still in the ED: an A06, and no A03 for it.
    world.referrals[posted[-1].referral_id] = TrackedReferral(posted[-1], in_ed=True)
    await hospitalise(world, posted[-1])
    await _settle(world)
    messages = [read_adt(m) for s, m in adt.sent if s == hospital]
    exits = [m for m in messages if m.trigger == "A03"]
    assert len(exits) == 11 and counters["hl7_ed_exits"] == 11
    transfers = [m for m in messages if m.trigger == "A06"]
    assert len(transfers) == 1 and counters["hl7_hospitalisations"] == 1
    assert effect_of(transfers[0], SenderKind.HOSPITAL) is Effect.HOSPITALISED
    pseudonyms = {g.body["patient"]["pseudonym"]: g for g in posted}
    for message in messages:
        assert pseudonymise(KEY, message.patient_id, message.patient_authority) in pseudonyms
    assert pseudonymise(KEY, transfers[0].patient_id, transfers[0].patient_authority) == posted[-1].body["patient"]["pseudonym"]
    # Once out of the ED, a hospitalisation is an inpatient admission (A01).
    await hospitalise(world, posted[0])
    assert read_adt(adt.sent[-1][1]).trigger == "A01"
    await world.client.aclose()
