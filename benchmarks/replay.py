"""Indicator replay: rebuild every indicator of a simulated national year (~162,000 referrals,
~1 M referral and capacity events) from the beginning of the log, timed from the replay's start
to its atomic switch-over, while the indicators service keeps running.

The events are produced onto the real referral and capacity topics of the bench broker
(batched: linger, big batches, no per-record wait). The live consumer groups are then marked
caught up (their offsets committed at the end of the log, as for a service that was running
all year) so that the timing is the replay path's alone. `rate` scales the volume
(rate / 50 × one year; the default 50 gives one year); `seconds` is unused.
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

from reflexe_common.envelope import ts
from reflexe_common.finess import with_key
from reflexe_common.geography import Geography
from reflexe_common.topics import CAPACITY_EVENTS, REFERRAL_EVENTS
from reflexe_indicators.entrypoints.app import GROUP, build_app
from reflexe_indicators.settings import IndicatorsSettings
from tests.support.infra import Infra
from tests.support.services import eventually, serve_in_process, token
from tests.support.issuer import suite_issuer
from tests.support.kafka import mark_caught_up

REFERRALS_PER_YEAR = 162_000
HADS = 288
REASONS = ["NO_CAPACITY", "OUT_OF_ZONE", "CARE_NOT_PROVIDED", "MEDICAL_NOT_ELIGIBLE", "PATIENT_REFUSED", "OTHER"]
KINDS = ["ED", "ED", "ED", "UHCD", "EHPAD", "GP", "WARD"]


def _headers(type_name: str, at: datetime) -> list[tuple[str, bytes]]:
    return [("ce_id", str(uuid.uuid4()).encode()), ("ce_type", type_name.encode()), ("ce_source", b"bench:replay"),
            ("ce_specversion", b"1.0"), ("ce_time", at.isoformat().encode()), ("content-type", b"application/protobuf")]


def national_year(referrals: int, seed: int = 2024):
    """(time, topic, key, message) of a simulated year, in time order."""
    rng = random.Random(seed)
    departments = sorted(d for d in Geography.load().departments if len(d) == 2 or d in ("971", "972", "974"))
    weights = [Geography.load().department(d).population for d in departments]
    hads = {d: [] for d in departments}
    for n in range(HADS):
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
    events = national_year(referrals)
    generated = time.perf_counter() - t0
    produced = await produce(infra.kafka_options(), events)
    print(f"\nReplay benchmark: {referrals} referrals, {len(events)} events generated in {generated:.1f} s, "
          f"produced in {produced:.1f} s ({len(events) / produced:,.0f} records/s)")
    del events
    await mark_caught_up(infra.kafka_options(), GROUP, REFERRAL_EVENTS)
    await mark_caught_up(infra.kafka_options(), f"{GROUP}-capacity", CAPACITY_EVENTS)
    settings = IndicatorsSettings(KAFKA_BOOTSTRAP=infra.kafka_bootstrap, DATABASE_URL=infra.database_url,
                                  OIDC_ISSUER=suite_issuer().url, LOG_LEVEL="WARNING")
    admin = token("admin")
    async with serve_in_process(build_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=300) as client:
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
              f"= {replay['events'] / replay['seconds']:,.0f} events/s (target: < 60 s)")
        print(f"  API answered {answered} queries during the replay (slowest {slowest * 1000:.0f} ms)")
        t = time.perf_counter()
        rows = (await client.get("/v1/indicators", headers=admin, params={
            "level": "department", "period": "month", "from": "2024-06-01", "to": "2024-06-30"})).json()["rows"]
        print(f"  after the switch: one national month by department computed in "
              f"{time.perf_counter() - t:.1f} s ({len(rows)} rows, {sum(r['referrals_received'] for r in rows):,} referrals)")
