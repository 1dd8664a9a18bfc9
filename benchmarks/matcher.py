"""The matcher alone: ReferralRequested produced straight onto the referral log → OfferProposed
committed on the matching log, with the capacity service as its own process.

(a) decision latency at a steady `rate` (referrals/s, for `seconds`): from the produce call of a
    ReferralRequested to the read_committed consumption of its OfferProposed, p50/p95/p99
    (target: p99 <= 25 ms at 100 referrals/s);
(b) flat cost: FLAT_REFERRALS produced at once into a department with no live hold, then as many
    into a department where LIVE_HOLDS live holds were placed first; offers committed per second
    in each and their ratio (target >= 0.8);
(c) sustained throughput: the LIVE_HOLDS referrals of that preload, produced as fast as possible,
    offers committed per second (target >= 1,000), with what the time goes to (the matcher's
    handler time per event from the service's /metrics, the outbox relay's publication delay,
    CPU of the service and PostgreSQL).

HADs with ample places, so every referral gets an offer: the figures are the matcher's, not those
of an escalation path. The run ends with one JSON line of its figures and targets.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families
from reflexe.v1 import referral_pb2

from benchmarks.common import (RssWatch, cpu_seconds, figure, latency_figures, paced, percentiles, postgres_cpu_seconds,
                               print_result, print_table)
from reflexe_common.envelope import PoisonRecord, ts, unwrap, wrap
from reflexe_common.geography import Geography
from reflexe_common.partitioning import DepartmentPartitioner
from reflexe_common.topics import MATCHING_EVENTS, REFERRAL_EVENTS
from tests.support.data import had_body, pseudonym, unique_finess
from tests.support.infra import Infra
from tests.support.kafka import follow_from_end
from tests.support.services import ServiceProcess, eventually, service_env, token

DEPARTMENTS = ("04", "13", "01", "03", "05", "16")  # one per partition of the referral log
# (b): two departments on partitions of their own, alike but for the live holds of the second.
EMPTY_DEPARTMENT, LOADED_DEPARTMENT = "02", "06"
HADS_PER_DEPARTMENT = 4
PLACES = 5000  # the API's maximum: 4 HADs x 5000 places per department, more than the referrals sent
LIVE_HOLDS = int(os.environ.get("REFLEXE_BENCH_MATCHER_REFERRALS", "10000"))
FLAT_REFERRALS = int(os.environ.get("REFLEXE_BENCH_MATCHER_FLAT_REFERRALS",
                                    "100" if os.environ.get("REFLEXE_BENCH_QUICK") else "2000"))
MATCHER_GROUP = "reflexe-matcher"


def referral_requested(referral_id: str, department: str, commune: str) -> referral_pb2.ReferralRequested:
    now = datetime.now(UTC)
    header = referral_pb2.ReferralEventHeader(referral_id=referral_id, department=department, occurred_at=ts(now),
                                              actor="hospital:130000011")
    return referral_pb2.ReferralRequested(header=header, request=referral_pb2.ReferralRequest(
        referral_id=referral_id, department=department,
        source=referral_pb2.Source(kind="ED", finess="130000011", unit="SAU"),
        patient=referral_pb2.Patient(pseudonym=pseudonym(), birth_year=1941, sex="F", care_commune=commune,
                                     place_of_care="HOME"),
        clinical=referral_pb2.Clinical(main_mpp="03", associated_mpp=["09"], karnofsky=50, equipment=["SYRINGE_DRIVER"],
                                       urgency="WITHIN_24H", expected_duration_days=10),
        conditions=referral_pb2.Conditions(patient_consent=True, gp_agreement=True, caregiver_present=True),
        requested_at=ts(now)))


class Offers:
    """Follows the matching log (read_committed) and notes when each referral's offer arrived."""

    def __init__(self, kafka: dict) -> None:
        self.kafka = kafka
        self.received: dict[str, float] = {}
        self.ready = asyncio.Event()

    async def follow(self) -> None:
        async for now, records in follow_from_end(self.kafka, MATCHING_EVENTS, self.ready, fetch_max_wait_ms=50):
            for r in records:
                try:
                    envelope = unwrap(list(r.headers), r.value)
                except PoisonRecord:
                    continue
                if envelope.type == "reflexe.v1.OfferProposed":
                    self.received.setdefault(envelope.message.referral_id, now)


def metric(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def mark_group_caught_up(kafka: dict) -> None:
    """The matcher group starts at the end of the log (as a service that was running would), so
    that earlier runs on the same broker are not part of the measure."""
    tps = [TopicPartition(REFERRAL_EVENTS.name, p) for p in range(REFERRAL_EVENTS.partitions)]
    consumer = AIOKafkaConsumer(**kafka, group_id=MATCHER_GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(end[tp], "") for tp in tps})
    except Exception as exc:  # the group has live members: it is not ours to move
        print(f"  (could not move {MATCHER_GROUP} to the end of the log: {exc!r}; earlier records are replayed first)")
    finally:
        await consumer.stop()


async def run(infra: Infra, rate: float, seconds: float, log_dir: Path) -> None:
    geography = Geography.load()
    departments = (*DEPARTMENTS, EMPTY_DEPARTMENT, LOADED_DEPARTMENT)
    communes = {d: [c.insee_code for c in geography.communes_of_department(d)] for d in departments}
    await mark_group_caught_up(infra.kafka_options())
    service = ServiceProcess("reflexe_capacity", service_env(infra, INSTANCE="bench"), "CAPACITY_HTTP_PORT", log_dir).start()
    rss = RssWatch()
    rss.watch("capacity", service.proc.pid)
    # Keyed by department onto the department's partition, as the platform's outbox relay does.
    producer = AIOKafkaProducer(**infra.kafka_options(), acks="all", enable_idempotence=True, linger_ms=2,
                                partitioner=DepartmentPartitioner())
    offers = Offers(infra.kafka_options())
    follower = asyncio.create_task(offers.follow())
    try:
        await service.wait_ready()
        await producer.start()
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as capacity:
            for department in departments:
                for n in range(HADS_PER_DEPARTMENT):
                    had = unique_finess(department)
                    body = had_body(f"HAD bench {department}-{n}", communes[department], department=department, places=PLACES)
                    (await capacity.put(f"/v1/hads/{had}", json=body, headers=token("admin"))).raise_for_status()
                    (await capacity.post(f"/v1/hads/{had}/capacity", headers=token("had", finess=had),
                                         json={"places_available": PLACES, "admissions_possible_today": PLACES,
                                               "status": "OPEN"})).raise_for_status()
            await asyncio.wait_for(offers.ready.wait(), 30)
            sent: dict[str, float] = {}

            async def send(i: int, among: tuple[str, ...] = DEPARTMENTS) -> None:
                department = among[i % len(among)]
                referral_id = str(uuid.uuid4())
                message = referral_requested(referral_id, department, communes[department][i % len(communes[department])])
                envelope = wrap(message, "bench/matcher", time=datetime.now(UTC))
                sent[referral_id] = time.perf_counter()
                await producer.send(REFERRAL_EVENTS.name, envelope.value(), key=department.encode(),
                                    headers=envelope.headers())

            async def all_offered(ids: set[str], timeout: float) -> None:
                await eventually(lambda: asyncio.sleep(0, ids.issubset(offers.received)), timeout=timeout,
                                 interval=0.05, what=f"{len(ids)} offers")

            async def burst(count: int, department: str) -> Burst:
                """`count` referrals produced at once into one department; offers committed per second."""
                sent.clear()
                wall = time.perf_counter()
                for i in range(count):
                    await send(i, (department,))
                await producer.flush()
                produced_s = time.perf_counter() - wall
                ids = set(sent)
                await all_offered(ids, 900)
                return Burst(sorted(offers.received[rid] - wall for rid in ids), produced_s)

            # Warm-up (the matcher joins its group, caches fill), then (a) at a steady rate.
            await paced(20, 40, send)
            await all_offered(set(sent), 120)
            sent.clear()
            count = int(rate * seconds)
            elapsed = await paced(rate, count, send)
            await all_offered(set(sent), 120)
            latencies = [offers.received[rid] - t for rid, t in sent.items()]

            # (b) with no live hold in the department.
            empty = await burst(FLAT_REFERRALS, EMPTY_DEPARTMENT)
            # (c) the preload of LIVE_HOLDS live holds, as fast as it goes: the sustained rate.
            before_text = (await capacity.get("/metrics")).text
            cpu_service, cpu_pg = cpu_seconds(service.proc.pid), postgres_cpu_seconds()
            sustained = await burst(LIVE_HOLDS, LOADED_DEPARTMENT)
            cpu_service = cpu_seconds(service.proc.pid) - cpu_service
            cpu_pg = postgres_cpu_seconds() - cpu_pg
            after = (await capacity.get("/metrics")).text
            # (b) again, with those holds live in the department.
            loaded = await burst(FLAT_REFERRALS, LOADED_DEPARTMENT)
    finally:
        rss.stop()
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await producer.stop()
        service.stop()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before_text, name, **labels)

    handled = delta("reflexe_handler_duration_seconds_count", consumer="matcher", outcome="handled")
    handler_s = delta("reflexe_handler_duration_seconds_sum", consumer="matcher", outcome="handled")
    published = delta("reflexe_outbox_publish_duration_seconds_count", service="capacity")
    publish_s = delta("reflexe_outbox_publish_duration_seconds_sum", service="capacity")
    decision = percentiles(latencies)
    print_table(f"Matcher benchmark: {count} referrals at {rate:.0f}/s (produced in {elapsed:.1f} s)", {
        "ReferralRequested -> OfferProposed": decision,
    })
    print(f"\n  flat: {FLAT_REFERRALS} referrals into a department with no live hold: {empty.rate:.0f} offers/s; "
          f"with {LIVE_HOLDS} live holds: {loaded.rate:.0f} offers/s; ratio {loaded.rate / empty.rate:.2f}")
    print(f"  sustained: {LIVE_HOLDS} referrals produced in {sustained.produced_s:.1f} s, all offered after "
          f"{sustained.duration:.1f} s: {sustained.rate:.0f} offers/s overall; {sustained.first_rate:.0f} offers/s over "
          f"the first tenth, {sustained.last_rate:.0f} offers/s over the last (as the live holds pile up)")
    if handled:
        print(f"  matcher: {handled:.0f} events handled, {handler_s / handled * 1000:.2f} ms each on average "
              f"(batches of a partition's records share a transaction); "
              f"{handler_s / sustained.duration:.0%} of the wall time inside the handler")
    if published:
        print(f"  outbox relay: {published:.0f} events published, {publish_s / published * 1000:.1f} ms on average "
              f"from commit to publication")
    print(f"  CPU over the sustained run: capacity service {cpu_service / sustained.duration:.0%} of one core, "
          f"PostgreSQL {cpu_pg / sustained.duration:.0%} of one core ({os.cpu_count()} cores)")
    print_result("matcher", {
        "rate_per_s": figure(rate, "referrals/s"),
        **latency_figures("event_to_offer", latencies, p99_target_ms=25),
        "sustained_per_s": figure(sustained.rate, "referrals/s", 1000, ">="),
        "first_tenth_per_s": figure(sustained.first_rate, "referrals/s"),
        "last_tenth_per_s": figure(sustained.last_rate, "referrals/s"),
        "without_live_holds_per_s": figure(empty.rate, "referrals/s"),
        "with_live_holds_per_s": figure(loaded.rate, "referrals/s"),
        "live_holds": figure(LIVE_HOLDS, "holds"),
        # the rate with LIVE_HOLDS live holds in the department over the rate with none
        "flat_ratio": figure(loaded.rate / empty.rate, "x", 0.8, ">="),
        "handler_ms_per_event": figure(handler_s / handled * 1000 if handled else None, "ms"),
        **rss.figures(),
    })


@dataclass(frozen=True)
class Burst:
    arrivals: list[float]  # seconds from the first produce call to each offer's arrival, sorted
    produced_s: float

    @property
    def duration(self) -> float:
        return self.arrivals[-1]

    @property
    def rate(self) -> float:
        return len(self.arrivals) / max(1e-9, self.duration)

    def _tenth_rate(self, tenth: list[float]) -> float:
        return len(tenth) / max(1e-9, tenth[-1] - tenth[0])

    @property
    def first_rate(self) -> float:
        return self._tenth_rate(self.arrivals[:max(2, len(self.arrivals) // 10)])

    @property
    def last_rate(self) -> float:
        return self._tenth_rate(self.arrivals[-max(2, len(self.arrivals) // 10):])
