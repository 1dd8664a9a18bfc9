"""HAD and desk behaviour against a fake platform (httpx mock transport, no network)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from reflexe_referral.entrypoints.schemas import CloseIn, DeclineIn, DeskOfferIn, WidenIn

from reflexe_simulator.actors import PARIS, Counters, SimClock, World
from reflexe_simulator.client import PlatformClient
from reflexe_simulator.scenario import build_scenario



class ClaimsOnlyTokens:
    """Unsigned tokens that only carry the role and scope, for the fake platform to read."""

    async def fetch(self, role, *, finess=None, department=None):
        claims = {"role": role, **({"finess": finess} if finess else {}), **({"department": department} if department else {})}
        return jwt.encode(claims, None, algorithm="none"), float("inf")


class FakePlatform:
    def __init__(self, referral_status: str = "ESCALATED", referral_department: str = "34") -> None:
        self.calls: list[tuple[str, str, dict, dict]] = []
        self.referral_status = referral_status
        self.referral_department = referral_department

    def __call__(self, request: httpx.Request) -> httpx.Response:
        claims = jwt.decode(request.headers["authorization"].split()[1], options={"verify_signature": False})
        body = json.loads(request.content) if request.content else {}
        self.calls.append((request.method, request.url.path, body, claims))
        if request.method == "GET" and request.url.path.startswith("/v1/referrals/"):
            return httpx.Response(200, json={"status": self.referral_status, "department": self.referral_department,
                                             "departments_searched": sorted({self.referral_department, "34"}),
                                             "tried_hads": []})
        if request.url.path.endswith("/capacity") and request.method == "GET":
            return httpx.Response(200, json={"hads": []})
        return httpx.Response(200, json={})

    def paths(self, suffix: str) -> list[tuple[str, str, dict, dict]]:
        return [c for c in self.calls if c[1].endswith(suffix)]


def _world(platform, speed=1e6):
    scenario = build_scenario(["34"], seed=2)
    counters = Counters()
    client = PlatformClient("http://ref", "http://cap", "http://not", ClaimsOnlyTokens(), counters, attempts=2, backoff=0,
                            transport=httpx.MockTransport(platform))
    world = World(scenario, client, SimClock(datetime(2025, 3, 10, 10, tzinfo=PARIS), speed), counters, seed=2)
    return world, counters


async def _settle(world, rounds=200):
    for _ in range(rounds):
        if not world.tasks:
            return
        await asyncio.sleep(0.02)


async def test_hads_answer_offers_mostly_accepting_and_admit_accepted_patients():
    platform = FakePlatform()
    world, counters = _world(platform)
    had = next(iter(world.hads.values()))
    had.background = 0  # plenty of room
    # A short real hold: the few answers modelled late really wait for its end (test_answer_timing.py).
    hold = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    for i in range(200):
        had.on_offer({"referral_id": f"00000000-0000-4000-8000-{i:012d}", "offer_id": f"o{i}", "had_finess": had.spec.finess,
                      "hold_until": hold})
    had.on_offer({"referral_id": "00000000-0000-4000-8000-000000000000", "offer_id": "o0", "hold_until": hold})  # duplicate
    await _settle(world, rounds=500)
    accepts, declines = platform.paths("/accept"), platform.paths("/decline")
    assert len(accepts) + len(declines) + counters["no_answer"] == 200
    assert 0.6 < len(accepts) / 200 < 0.8 and 0.15 < len(declines) / 200 < 0.35
    for _, path, body, claims in accepts + declines:
        assert claims["role"] == "had" and claims["finess"] == had.spec.finess
    for _, _, body, _ in declines:
        DeclineIn.model_validate(body)
    assert {c[1] for c in platform.paths("/admission")} <= {f"/v1/referrals/{c[1].split('/')[3]}/admission" for c in accepts}
    assert counters["admitted"] + counters["cancelled"] == len(accepts)
    assert counters["discharged"] == counters["admitted"]  # at this speed every stay ends
    for task in list(world.tasks):
        task.cancel()
    await world.client.aclose()


@pytest.mark.parametrize("status,acts", [("ESCALATED", True), ("ACCEPTED", False)])
async def test_the_desk_acts_on_escalations_only_while_still_escalated(status, acts):
    platform = FakePlatform(status)
    world, counters = _world(platform)
    desk = world.desks["34"]
    for i in range(30):
        desk.on_event("referral.escalated", {"referral_id": f"00000000-0000-4000-8000-{i:012d}", "why": "no HAD left"})
    await _settle(world)
    actions = [c for c in platform.calls if "/desk/" in c[1]]
    assert counters["escalated"] == 30
    if not acts:
        assert actions == []
        return
    assert len(actions) == 30
    kinds = {c[1].rsplit("/", 1)[1] for c in actions}
    assert "widen" in kinds and "close" in kinds
    schema = {"widen": WidenIn, "offer": DeskOfferIn, "close": CloseIn}
    for _, path, body, claims in actions:
        schema[path.rsplit("/", 1)[1]].model_validate(body)
        assert claims["role"] == "desk" and claims["department"] == "34"
    for _, path, body, _ in actions:
        if path.endswith("/widen"):
            assert set(body["departments"]) <= {"11", "12", "30", "81"}
    await world.client.aclose()


async def test_a_desk_leaves_a_referral_widened_to_it_to_the_referrals_own_desk():
    platform = FakePlatform("ESCALATED", referral_department="30")  # the Gard's, widened to the Hérault
    world, counters = _world(platform)
    for i in range(10):
        world.desks["34"].escalated(f"00000000-0000-4000-8000-{i:012d}", "(seen by polling)", ("poll", i))
    await _settle(world)
    assert counters["escalated"] == 10
    assert [c for c in platform.calls if "/desk/" in c[1]] == []
    await world.client.aclose()


async def test_conflicts_are_counted_and_unreachable_services_do_not_raise():
    counters = Counters()

    def conflict(request):
        return httpx.Response(409, json={"code": "OFFER_EXPIRED", "title": "the hold expired", "status": 409})

    client = PlatformClient("http://ref", "http://cap", "http://not", ClaimsOnlyTokens(), counters, attempts=2, backoff=0,
                            transport=httpx.MockTransport(conflict))
    result = await client.accept("349000018", "00000000-0000-4000-8000-000000000001", "o1")
    assert result.conflict and result.code == "OFFER_EXPIRED" and counters["http_409"] == 1
    await client.aclose()

    def down(request):
        raise httpx.ConnectError("connection refused", request=request)

    client = PlatformClient("http://ref", "http://cap", "http://not", ClaimsOnlyTokens(), counters, attempts=2, backoff=0,
                            transport=httpx.MockTransport(down))
    result = await client.post_referral("349100016", {})
    assert result.status == 0 and not result.ok and counters["unreachable"] == 1
    await client.aclose()
