"""Durable clocks of the referral service, with the services as separate processes.

- HOLD_EXPIRY fires after a restart: the referral service is SIGKILLed while an offer waits and
  restarted once the hold has ended; the referral gets OfferExpired from the restarted process
  and the matcher cascades to the next HAD (then, that HAD declining, escalates).
- OFFER_UNANSWERED emits OfferUnanswered once per offer.
- ADMISSION_OVERDUE fires for a referral requested 25 h ago, once, and not again after a restart.

"Only once" is checked after the clock loop has demonstrably run past the first clock's due time
many times: a later referral's clock of the same kind must have fired too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from tests.support.data import had_body, referral_body, unique_finess
from tests.support.infra import Infra
from tests.support.kafka import matching_starts_from_now
from tests.support.services import ServiceProcess, eventually, service_env, token
from tests.support.territory import own_communes

pytestmark = pytest.mark.integration

HOLD_SECONDS = 10.0  # CAPACITY_HOLD_MINUTES_WITHIN_24H: long enough to kill the service before it ends
UNANSWERED_SECONDS = 1.8  # REFERRAL_OFFER_UNANSWERED_MINUTES=0.03
ADMIN = token("admin")
DESK = token("desk", department="34")
PARIS = ZoneInfo("Europe/Paris")
# A SIGKILLed referral service stays a member of its consumer group until its session times out
# (10 s, reflexe_common.streams), and its successor reads nothing meanwhile: after 6 s instead, so that a test
# waiting for an event the new process consumes does not depend on whether another test of the
# module killed one just before.
KILLED_MEMBER_LEAVES_SOON = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1",
                             "BROKER_REBALANCE_TIMEOUT": "20"}


@dataclass
class Platform:
    infra: Infra
    log_dir: Path
    capacity: ServiceProcess
    referral: ServiceProcess
    communes: list[str] = field(default_factory=list)  # expiry, unanswered, overdue

    def referral_process(self) -> ServiceProcess:
        env = service_env(self.infra, REFERRAL_OFFER_UNANSWERED_MINUTES=str(UNANSWERED_SECONDS / 60),
                          REFERRAL_CLOCK_POLL_SECONDS="0.2", **KILLED_MEMBER_LEAVES_SOON)
        return ServiceProcess("reflexe_referral", env, "REFERRAL_HTTP_PORT", self.log_dir)

    async def restart_referral(self) -> None:
        self.referral.kill()
        self.referral = self.referral_process().start()
        await self.referral.wait_ready()
        await self.caught_up()

    async def caught_up(self) -> None:
        """Ready is not consuming: a new process first waits for its group (the killed member's
        session to end) and re-reads what was not committed. A fresh referral matched, through
        Kafka both ways, shows it is past both; the clocks measured next must not include them."""
        async with self.client() as client:
            probe = await post(client, self.communes[2])  # no HAD there: escalated at once
            await wait_for_event(client, probe, "ReferralEscalated", timeout=120)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.referral.url, timeout=30)


@pytest.fixture(scope="module")
async def platform(topics, tmp_path_factory) -> AsyncIterator[Platform]:
    log_dir = tmp_path_factory.mktemp("clocks")
    capacity = ServiceProcess("reflexe_capacity", service_env(topics, CAPACITY_HOLD_MINUTES_WITHIN_24H=str(HOLD_SECONDS / 60)),
                              "CAPACITY_HTTP_PORT", log_dir)
    platform = Platform(topics, log_dir, capacity, None, own_communes(3))  # type: ignore[arg-type]
    platform.referral = platform.referral_process()
    try:
        await matching_starts_from_now(topics)
        capacity.start()
        platform.referral.start()
        await capacity.wait_ready()
        await platform.referral.wait_ready()
        await platform.caught_up()
        yield platform
    finally:
        capacity.stop()
        platform.referral.stop()


async def register(platform: Platform, commune: str, places: int = 1) -> str:
    finess = unique_finess()
    async with httpx.AsyncClient(base_url=platform.capacity.url, timeout=30) as capacity:
        response = await capacity.put(f"/v1/hads/{finess}", json=had_body(f"HAD {finess}", [commune]), headers=ADMIN)
        assert response.status_code == 200, response.text
        response = await capacity.post(f"/v1/hads/{finess}/capacity", headers=token("had", finess=finess),
                                       json={"places_available": places, "admissions_possible_today": places, "status": "OPEN"})
        assert response.status_code == 201, response.text
    return finess


async def post(client: httpx.AsyncClient, commune: str, **overrides) -> str:
    hospital = unique_finess()
    response = await client.post("/v1/referrals", json=referral_body(hospital, commune, **overrides),
                                 headers=token("hospital", finess=hospital))
    assert response.status_code == 201, response.text
    return response.json()["referral_id"]


async def timeline(client: httpx.AsyncClient, referral_id: str) -> list[dict]:
    response = await client.get(f"/v1/referrals/{referral_id}/timeline", headers=DESK)
    assert response.status_code == 200, response.text
    return response.json()["events"]


async def wait_for_event(client: httpx.AsyncClient, referral_id: str, event_type: str, count: int = 1,
                         timeout: float = 30) -> list[dict]:
    async def probe():
        events = await timeline(client, referral_id)
        return events if sum(e["type"] == event_type for e in events) >= count else None

    return await eventually(probe, timeout=timeout, interval=0.1, what=f"{event_type} x{count} on {referral_id}")


def types(events: list[dict], *only: str) -> list[str]:
    return [e["type"] for e in events if not only or e["type"] in only]


async def test_hold_expiry_fires_after_a_restart_and_the_matcher_cascades(platform):
    commune = platform.communes[0]
    first, second = sorted([await register(platform, commune), await register(platform, commune)])
    async with platform.client() as client:
        referral_id = await post(client, commune)
        events = await wait_for_event(client, referral_id, "OfferMade")
    offer = next(e for e in events if e["type"] == "OfferMade")
    assert offer["had_finess"] == first  # equal places and size: FINESS breaks the tie
    hold_until = datetime.fromisoformat(offer["hold_until"])
    platform.referral.kill()  # SIGKILL while the offer waits for the HAD's answer
    killed_at = datetime.now(UTC)
    assert killed_at < hold_until, "the hold ended before the crash: the test proves nothing"

    async def hold_ended():  # waiting for time to pass, not for the system
        return datetime.now(UTC) > hold_until + timedelta(seconds=0.5)

    await eventually(hold_ended, timeout=HOLD_SECONDS + 5, interval=0.1, what="the hold's end")
    async with httpx.AsyncClient() as probe:  # nothing is listening: the service is really down
        with pytest.raises(httpx.ConnectError):
            await probe.get(f"{platform.referral.url}/healthz")
    await platform.restart_referral()

    async with platform.client() as client:
        events = await wait_for_event(client, referral_id, "OfferMade", count=2)
        expired = next(e for e in events if e["type"] == "OfferExpired")
        assert expired["offer_id"] == offer["offer_id"] and expired["had_finess"] == first
        assert datetime.fromisoformat(expired["occurred_at"]) >= hold_until
        second_offer = [e for e in events if e["type"] == "OfferMade"][1]
        assert second_offer["had_finess"] == second
        assert types(events, "OfferMade", "OfferExpired") == ["OfferMade", "OfferExpired", "OfferMade"]
        # The capacity side gave the first place back at the expiry's time.
        conn = await asyncpg.connect(platform.infra.database_url)
        try:
            hold = await conn.fetchrow("SELECT state, released_at FROM capacity.holds WHERE hold_id = $1",
                                       offer["offer_id"])
        finally:
            await conn.close()
        assert hold["state"] == "RELEASED" and hold["released_at"] == datetime.fromisoformat(expired["occurred_at"])

        # The second HAD declines: no HAD left, the referral is escalated to the desk.
        declined = await client.post(f"/v1/referrals/{referral_id}/offers/{second_offer['offer_id']}/decline",
                                     json={"reason": "NO_CAPACITY"}, headers=token("had", finess=second))
        assert declined.status_code == 200, declined.text
        events = await wait_for_event(client, referral_id, "ReferralEscalated")
        assert types(events, "OfferMade", "OfferExpired", "OfferDeclined", "ReferralEscalated") == [
            "OfferMade", "OfferExpired", "OfferMade", "OfferDeclined", "ReferralEscalated"]


async def test_offer_unanswered_is_signalled_once(platform):
    commune = platform.communes[1]
    had = await register(platform, commune, places=2)
    planned = {"clinical": {"urgency": "PLANNED", "planned_date": (datetime.now(UTC) + timedelta(days=2)).date().isoformat()}}
    async with platform.client() as client:
        referral_id = await post(client, commune, **planned)  # a 4 h hold: no expiry in sight
        events = await wait_for_event(client, referral_id, "OfferUnanswered")
        offer = next(e for e in events if e["type"] == "OfferMade")
        signalled = next(e for e in events if e["type"] == "OfferUnanswered")
        assert signalled["offer_id"] == offer["offer_id"] and signalled["had_finess"] == had
        made_at = datetime.fromisoformat(offer["occurred_at"])
        assert datetime.fromisoformat(signalled["occurred_at"]) >= made_at + timedelta(seconds=UNANSWERED_SECONDS)

        # A later offer's reminder firing proves the clock loop ran past the first one's due time.
        sentinel = await post(client, commune, **planned)
        await wait_for_event(client, sentinel, "OfferUnanswered")
        events = await timeline(client, referral_id)
        assert types(events).count("OfferUnanswered") == 1
        state = (await client.get(f"/v1/referrals/{referral_id}", headers=DESK)).json()
        assert state["status"] == "OFFERED"  # a reminder, not an expiry
        assert [c["kind"] for c in state["clocks"]].count("OFFER_UNANSWERED") == 0
        assert "HOLD_EXPIRY" in [c["kind"] for c in state["clocks"]]
        # The HAD can still answer after the reminder.
        accepted = await client.post(f"/v1/referrals/{referral_id}/offers/{offer['offer_id']}/accept",
                                     headers=token("had", finess=had))
        assert accepted.status_code == 200 and accepted.json()["status"] == "ACCEPTED"


async def test_admission_overdue_fires_once_for_a_referral_requested_25_hours_ago(platform):
    commune = platform.communes[2]  # no HAD there: the referrals are escalated
    long_ago = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    async with platform.client() as client:
        referral_id = await post(client, commune, requested_at=long_ago)
        events = await wait_for_event(client, referral_id, "AdmissionOverdue")
        assert types(events).count("AdmissionOverdue") == 1
        state = (await client.get(f"/v1/referrals/{referral_id}", headers=DESK)).json()
        assert state["requested_at"] == datetime.fromisoformat(long_ago).isoformat()
        assert "ADMISSION_OVERDUE" not in [c["kind"] for c in state["clocks"]]

    await platform.restart_referral()  # SIGKILL then a fresh process: the fired clock stays fired
    async with platform.client() as client:
        sentinel = await post(client, commune, requested_at=long_ago)
        await wait_for_event(client, sentinel, "AdmissionOverdue")
        events = await timeline(client, referral_id)
        assert types(events).count("AdmissionOverdue") == 1
        # A recent referral is not overdue.
        recent = await post(client, commune)
        state = (await client.get(f"/v1/referrals/{recent}", headers=DESK)).json()
        overdue = [c for c in state["clocks"] if c["kind"] == "ADMISSION_OVERDUE"]
        assert len(overdue) == 1 and datetime.fromisoformat(overdue[0]["due_at"]) > datetime.now(UTC) + timedelta(hours=23)

        # A planned referral counts from its planned date: requested 25 h ago for tomorrow, it is due
        # at the end of tomorrow in Montpellier; one whose planned day is over is overdue, with its date.
        tomorrow = datetime.now(PARIS).date() + timedelta(days=1)
        ahead = await post(client, commune, requested_at=long_ago,
                           clinical={"urgency": "PLANNED", "planned_date": tomorrow.isoformat()})
        state = (await client.get(f"/v1/referrals/{ahead}", headers=DESK)).json()
        [clock] = [c for c in state["clocks"] if c["kind"] == "ADMISSION_OVERDUE"]
        end_of_tomorrow = datetime.combine(tomorrow + timedelta(days=1), datetime.min.time(), PARIS)
        assert datetime.fromisoformat(clock["due_at"]) == end_of_tomorrow
        past_day = datetime.now(PARIS).date() - timedelta(days=2)
        late = await post(client, commune, requested_at=(datetime.now(UTC) - timedelta(days=3)).isoformat(),
                          clinical={"urgency": "PLANNED", "planned_date": past_day.isoformat()})
        [signal] = [e for e in await wait_for_event(client, late, "AdmissionOverdue") if e["type"] == "AdmissionOverdue"]
        assert signal["planned_date"] == past_day.isoformat()
        assert datetime.fromisoformat(signal["due_at"]) == datetime.combine(past_day + timedelta(days=1), datetime.min.time(), PARIS)
        assert types(await timeline(client, ahead)).count("AdmissionOverdue") == 0
