"""Indicator replay: rebuild every indicator of a simulated national year (~162,000 referrals,
~1 M referral and capacity events) from the beginning of the log, timed from the replay's start
to its atomic switch-over, while the indicators service keeps running.

The events are produced onto the real referral and capacity topics of the bench broker
(batched: linger, big batches, no per-record wait). The live consumer groups are then marked
caught up (their offsets committed at the end of the log, as for a service that was running
all year) so that the timing is the replay path's alone. `rate` scales the volume
(rate / 50 × one year; the default 50 gives one year); `seconds` is unused.

Then, on the rebuilt indicators, one month queried at every level through the API (the nation
by department, by region, by source and by HAD; one region; one department), and the service
process's resident memory over the whole run.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from reflexe.v1 import capacity_pb2 as cpb
from reflexe.v1 import referral_pb2 as pb

from benchmarks.common import RssWatch, figure, print_result, sized
from reflexe_common.envelope import ts
from reflexe_common.finess import with_key
from reflexe_common.geography import Geography
from reflexe_common.topics import CAPACITY_EVENTS, REFERRAL_EVENTS
from reflexe_indicators.entrypoints.app import GROUP
from tests.support.infra import Infra
from tests.support.kafka import mark_caught_up
from tests.support.services import ServiceProcess, eventually, service_env, token

REFERRALS_PER_YEAR = 162_000
HADS = 288
REASONS = ["NO_CAPACITY", "OUT_OF_ZONE", "CARE_NOT_PROVIDED", "MEDICAL_NOT_ELIGIBLE", "PATIENT_REFUSED", "OTHER"]
KINDS = ["ED", "ED", "ED", "UHCD", "EHPAD", "GP", "WARD"]
REPLAY_TARGET_SECONDS_PER_YEAR = 10
QUERY_TARGET_MS = 200  # any one-month query, at any level
QUERY_MONTH = ("2024-06-01", "2024-06-30")
QUERY_RUNS = 3  # each query's slowest of a few runs: the first meets cold caches, as a user may
# name → (caller, parameters) of the one-month queries timed after the replay
QUERIES = {
    "national_by_department": (("admin", {}), {"level": "department"}),
    "national_by_region": (("admin", {}), {"level": "region"}),
    "national_by_source": (("admin", {}), {"level": "source"}),
    "national_by_had": (("admin", {}), {"level": "had"}),
    "region": (("ars", {"region": "76"}), {"level": "department"}),
    "department": (("desk", {"department": "34"}), {"level": "department"}),
}


def _headers(type_name: str, at: datetime) -> list[tuple[str, bytes]]:
    return [("ce_id", str(uuid.uuid4()).encode()), ("ce_type", type_name.encode()), ("ce_source", b"bench:replay"),
            ("ce_specversion", b"1.0"), ("ce_time", at.isoformat().encode()), ("content-type", b"application/protobuf")]


def national_year(referrals: int, seed: int = 2024, had_count: int = HADS):
    """(time, topic, key, message) of a simulated year, in time order."""
    rng = random.Random(seed)
    departments = sorted(d for d in Geography.load().departments if len(d) == 2 or d in ("971", "972", "974"))
    weights = [Geography.load().department(d).population for d in departments]
    hads = {d: [] for d in departments}
    for n in range(had_count):
        d = departments[n % len(departments)]
        hads[d].append(with_key(f"{d}{n:0{8 - len(d)}d}"))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    events = []
    for d, finesses in hads.items():  # two declarations a day, some days missed
        for had in finesses:
            authorised = rng.choice([30, 40, 60, 80, 120])
            at = start + timedelta(minutes=rng.randrange(600))
            while at < start + timedelta(days=366):
                events.append((at, CAPACITY_EVENTS.name, d, cpb.CapacityDeclared(
                    had_finess=had, department=d, places_available=rng.randrange(10), admissions_possible_today=2,
                    status="OPEN", declared_at=ts(at), authorised_places=authorised)))
                at += timedelta(hours=rng.choice([8, 12, 12, 16, 30]))
    for d in rng.choices(departments, weights, k=referrals):
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        t = start + timedelta(seconds=rng.randrange(365 * 86400))

        def h(at):
            return pb.ReferralEventHeader(referral_id=rid, department=d, occurred_at=ts(at), actor="system")

        kind = rng.choice(KINDS)
        events.append((t, REFERRAL_EVENTS.name, d, pb.ReferralRequested(header=h(t), request=pb.ReferralRequest(
            referral_id=rid, department=d, source=pb.Source(kind=kind, finess=with_key(f"{d}{rng.randrange(40):0{8 - len(d)}d}")),
            patient=pb.Patient(place_of_care="EHPAD" if kind == "EHPAD" else "HOME"), requested_at=ts(t)))))
        if rng.random() < 0.06:
            t += timedelta(minutes=rng.randrange(10, 120))
            events.append((t, REFERRAL_EVENTS.name, d, pb.ReferralDeclaredIneligible(header=h(t), reason=rng.choice(REASONS))))
            continue
        accepted = None
        for n, had in enumerate(rng.sample(hads[d], min(3, len(hads[d])))):
            oid = f"{rid}:{n}"
            t += timedelta(minutes=rng.randrange(1, 90))
            events.append((t, REFERRAL_EVENTS.name, d, pb.OfferMade(header=h(t), offer_id=oid, had_finess=had)))
            t += timedelta(minutes=rng.randrange(1, 30))
            if rng.random() < 0.75:
                events.append((t, REFERRAL_EVENTS.name, d, pb.OfferAccepted(header=h(t), offer_id=oid, had_finess=had)))
                accepted = had
                break
            events.append((t, REFERRAL_EVENTS.name, d, pb.OfferDeclined(header=h(t), offer_id=oid, had_finess=had,
                                                                         reason=rng.choice(REASONS))))
        if accepted is None:
            events.append((t, REFERRAL_EVENTS.name, d, pb.ReferralEscalated(header=h(t), why="none left")))
            continue
        t += timedelta(hours=rng.randrange(2, 48))
        events.append((t, REFERRAL_EVENTS.name, d, pb.PatientAdmitted(header=h(t), had_finess=accepted)))
        t += timedelta(days=rng.randrange(1, 80))
        events.append((t, REFERRAL_EVENTS.name, d, pb.PatientDischarged(header=h(t), had_finess=accepted)))
    events.sort(key=lambda e: e[0])
    return events


async def produce(kafka: dict, events) -> float:
    producer = AIOKafkaProducer(**kafka, acks=1, linger_ms=50, max_batch_size=1024 * 1024,
                                max_request_size=8 * 1024 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for at, topic, key, message in events:
            pending.append(await producer.send(topic, message.SerializeToString(), key=key.encode(),
                                               headers=_headers(message.DESCRIPTOR.full_name, at)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def run(infra: Infra, rate: float, seconds: float, log_dir: Path) -> None:
    referrals = max(1000, int(REFERRALS_PER_YEAR * rate / 50))
    t0 = time.perf_counter()
    # A quick run keeps a few HADs: their capacity declarations, not the referrals, make most of a year's log.
    events = national_year(referrals, had_count=sized(HADS, 12))
    generated = time.perf_counter() - t0
    produced = await produce(infra.kafka_options(), events)
    print(f"\nReplay benchmark: {referrals} referrals, {len(events)} events generated in {generated:.1f} s, "
          f"produced in {produced:.1f} s ({len(events) / produced:,.0f} records/s)")
    del events
    await mark_caught_up(infra.kafka_options(), GROUP, REFERRAL_EVENTS)
    await mark_caught_up(infra.kafka_options(), f"{GROUP}-capacity", CAPACITY_EVENTS)
    service = ServiceProcess("reflexe_indicators", service_env(infra), "INDICATORS_HTTP_PORT", log_dir).start()
    rss = RssWatch()
    rss.watch("indicators", service.proc.pid)
    admin = token("admin")
    try:
        await service.wait_ready()
        async with httpx.AsyncClient(base_url=service.url, timeout=300) as client:
            started = (await client.post("/v1/indicators/replay", headers=admin)).json()
            answered, slowest = 0, 0.0

            async def switched():
                nonlocal answered, slowest
                t = time.perf_counter()
                r = await client.get("/v1/indicators", headers=token("ars", region="76"),
                                     params={"level": "department", "period": "month", "from": "2024-01-01", "to": "2024-01-31"})
                slowest = max(slowest, time.perf_counter() - t)
                answered += r.status_code == 200
                status = (await client.get("/v1/indicators/replay", headers=admin)).json()
                if status["replay"]["state"] == "failed":
                    raise AssertionError(status)
                return status if status["current_generation"] == started["generation"] else None

            status = await eventually(switched, timeout=900, interval=0.5, what="the replay switching over")
            replay = status["replay"]
            print(f"  replay (start -> switch-over): {replay['seconds']:.1f} s for {replay['events']:,} events "
                  f"= {replay['events'] / replay['seconds']:,.0f} events/s")
            print(f"  API answered {answered} queries during the replay (slowest {slowest * 1000:.0f} ms)")
            query_ms = await _time_queries(client)
    finally:
        rss.stop()
        service.stop()
    for name, ms in query_ms.items():
        print(f"  one month, {name.replace('_', ' ')}: {ms:.0f} ms (slowest of {QUERY_RUNS})")
    years = referrals / REFERRALS_PER_YEAR
    print_result("replay", {
        "referrals": figure(referrals, "count"),
        "events": figure(replay["events"], "count"),
        "replay_seconds": figure(replay["seconds"], "s"),
        # The target is a national year's; a run of another size is compared per year of log.
        "replay_seconds_per_year": figure(replay["seconds"] / years, "s", REPLAY_TARGET_SECONDS_PER_YEAR, "<="),
        "events_per_s": figure(replay["events"] / replay["seconds"] if replay["seconds"] else None, "events/s"),
        **{f"query_{name}_ms": figure(ms, "ms", QUERY_TARGET_MS, "<=") for name, ms in query_ms.items()},
        **rss.figures(),
    })


async def _time_queries(client: httpx.AsyncClient) -> dict[str, float]:
    """Each query's slowest answer time (ms) over QUERY_RUNS runs; a query refused stops the run."""
    timings: dict[str, float] = {}
    for name, ((role, scope), params) in QUERIES.items():
        headers = token(role, **scope)
        slowest = 0.0
        for _ in range(QUERY_RUNS):
            started = time.perf_counter()
            response = await client.get("/v1/indicators", headers=headers, params={
                **params, "period": "month", "from": QUERY_MONTH[0], "to": QUERY_MONTH[1]})
            slowest = max(slowest, time.perf_counter() - started)
            response.raise_for_status()
        timings[name] = slowest * 1000
    return timings
