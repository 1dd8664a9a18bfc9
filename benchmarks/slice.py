"""End-to-end latency of the first slice: referral POST answered → offer webhook received at the
HAD, at a steady rate, with the raw aiokafka produce→consume round trip on the same broker as
the reference (the figure to compare with: what the broker alone costs on this machine), and
the resident memory of each service process under that load."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.common import CpuAccount, RssWatch, figure, latency_figures, paced, percentiles, print_result, print_table
from reflexe_common.envelope import unwrap
from reflexe_common.finess import with_key
from reflexe_common.topics import MATCHING_EVENTS, REFERRAL_EVENTS
from reflexe_common.geography import Geography
from tests.support.data import had_body, referral_body
from tests.support.infra import Infra
from tests.support.platform import running_platform
from tests.support.receiver import WebhookReceiver
from tests.support.services import eventually, token

P99_TARGET_MS = 100  # POST answered → webhook received, at 100 referrals/s


async def raw_round_trip(kafka: dict, rate: float, count: int) -> list[float]:
    topic = f"bench.roundtrip.{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 6, 1)])
    await admin.close()
    consumer = AIOKafkaConsumer(topic, **kafka, auto_offset_reset="earliest", group_id=f"rt-{topic}",
                                fetch_max_wait_ms=100)
    producer = AIOKafkaProducer(**kafka, acks="all", enable_idempotence=True, linger_ms=1)
    await consumer.start()
    await producer.start()
    sent: dict[bytes, float] = {}
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < count:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    latencies.append(time.perf_counter() - sent[r.value])

    reader = asyncio.create_task(consume())
    await asyncio.sleep(2)  # let the consumer join before timing

    async def send(i: int) -> None:
        value = f"{i}".encode()
        sent[value] = time.perf_counter()
        await producer.send_and_wait(topic, value, key=str(i % 13).encode())

    await paced(rate, count, send)
    await asyncio.wait_for(reader, 60)
    await producer.stop()
    await consumer.stop()
    return latencies


async def _record_times(kafka: dict, topic: str, type_name: str) -> dict[str, float]:
    """referral_id → broker record time (seconds) of the first `type_name` event on the topic."""
    consumer = AIOKafkaConsumer(topic, **kafka, auto_offset_reset="earliest",
                                isolation_level="read_committed", group_id=None, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, float] = {}
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for r in records:
                    headers = dict(r.headers)
                    if headers.get("ce_type", b"").decode() == type_name:
                        envelope = unwrap(list(r.headers), r.value)
                        message = envelope.message
                        rid = message.header.referral_id if hasattr(message, "header") else message.referral_id
                        found.setdefault(rid, r.timestamp / 1000)
    finally:
        await consumer.stop()
    return found


async def _hops(kafka: dict, answered: dict[str, float], received: dict[str, float]) -> dict[str, list[float]]:
    """Where the time goes, from the records' broker timestamps (same clock: one machine)."""
    requested = await _record_times(kafka, REFERRAL_EVENTS.name, "reflexe.v1.ReferralRequested")
    proposed = await _record_times(kafka, MATCHING_EVENTS.name, "reflexe.v1.OfferProposed")
    ids = [rid for rid in answered if rid in requested and rid in proposed and rid in received]
    return {
        "POST answered -> event on Kafka": [requested[r] - answered[r] for r in ids],
        "event on Kafka -> offer on Kafka": [proposed[r] - requested[r] for r in ids],
        "offer on Kafka -> webhook received": [received[r] - proposed[r] for r in ids],
    }


async def _mean_from_metrics(url: str, metric: str, **labels: str) -> float:
    """Mean of a histogram from a service's /metrics (sum over count, all matching series)."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{url}/metrics")).text
    totals = {"_sum": 0.0, "_count": 0.0}
    for line in text.splitlines():
        for suffix in totals:
            if line.startswith(metric + suffix) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                totals[suffix] += float(line.rsplit(" ", 1)[1])
    return totals["_sum"] / totals["_count"] if totals["_count"] else float("nan")


async def run(infra: Infra, rate: float, seconds: float, log_dir: Path) -> None:
    count = int(rate * seconds)
    communes = [c.insee_code for c in Geography.load().communes_of_department("34")]
    rss = RssWatch()
    async with running_platform(infra, log_dir) as services, WebhookReceiver() as receiver:
        for name, process in services.items():
            rss.watch(name, process.proc.pid)
        # The load goes through aiohttp's client, 64 kept-alive connections: httpx cost this
        # benchmark about 30 ms of CPU per POST and, with a thousand connections, 69 % of its CPU
        # assigning requests to them (py-spy), so the figure measured the client first.
        async with aiohttp.ClientSession(services["referral"].url, timeout=aiohttp.ClientTimeout(total=60),
                                         connector=aiohttp.TCPConnector(limit=64)) as referral, \
                httpx.AsyncClient(base_url=services["capacity"].url, timeout=60) as capacity, \
                httpx.AsyncClient(base_url=services["notify"].url, timeout=60) as notify:
            for n in range(8):  # eight HADs sharing the department, ample places
                had = with_key(f"34990{n:03d}")
                (await capacity.put(f"/v1/hads/{had}", json=had_body(f"HAD bench {n}", communes, places=5000),
                                    headers=token("admin"))).raise_for_status()
                (await notify.post("/v1/subscriptions", headers=token("had", finess=had),
                                   json={"url": f"{receiver.url}/had/{had}", "event_types": ["offer.proposed"]})).raise_for_status()
                (await capacity.post(f"/v1/hads/{had}/capacity", headers=token("had", finess=had),
                                     json={"places_available": 5000, "admissions_possible_today": 5000,
                                           "status": "OPEN"})).raise_for_status()
            hospital = "340000017"
            headers = token("hospital", finess=hospital)
            answered: dict[str, float] = {}
            post_latencies: list[float] = []

            async def post(i: int) -> None:
                body = referral_body(hospital, communes[i % len(communes)])
                started = time.perf_counter()
                async with referral.post("/v1/referrals", json=body, headers=headers) as response:
                    response.raise_for_status()
                    await response.read()
                answered[body["referral_id"]] = time.time()
                post_latencies.append(time.perf_counter() - started)

            await paced(5, 20, post)  # warm-up
            await eventually(lambda: asyncio.sleep(0, len(receiver.of_type("offer.proposed")) >= 20), timeout=60, what="warm-up")
            warm = {d.json["data"]["referral_id"] for d in receiver.of_type("offer.proposed")}
            answered.clear()
            post_latencies.clear()
            cpu = CpuAccount({name: process.proc.pid for name, process in services.items()})
            cpu.start()
            elapsed = await paced(rate, count, post)
            await eventually(lambda: asyncio.sleep(0, len(receiver.unique()) - len(warm) >= count), timeout=120,
                             what="every webhook")
            cpu.stop()
            received = {d.json["data"]["referral_id"]: d.at for d in receiver.of_type("offer.proposed")}
            slice_latencies = [received[rid] - t for rid, t in answered.items() if rid in received]
            hops = await _hops(infra.kafka_options(), answered, received)
            internals = {name: await _mean_from_metrics(services[svc].url, metric, **labels) for name, (svc, metric, labels) in {
                "matcher handler (mean per record)": ("capacity", "reflexe_handler_duration_seconds", {"consumer": "matcher"}),
                "capacity outbox commit -> Kafka (mean)": ("capacity", "reflexe_outbox_publish_duration_seconds", {}),
                "referral outbox commit -> Kafka (mean)": ("referral", "reflexe_outbox_publish_duration_seconds", {}),
                "notify consumer handler (mean)": ("notify", "reflexe_handler_duration_seconds", {"consumer": "notify"}),
            }.items()}
            rss.stop()
    raw = await raw_round_trip(infra.kafka_options(), rate, count)
    slice_stats, raw_stats = percentiles(slice_latencies), percentiles(raw)

    def ratio(key: str) -> float | None:
        """The slice's latency in round trips of the bare broker measured in the same run."""
        if slice_stats.get(key) and raw_stats.get(key):
            return slice_stats[key] / raw_stats[key]
        return None

    print_table(f"Slice benchmark: {count} referrals at {rate:.0f}/s (posting took {elapsed:.1f} s)", {
        "POST sent -> 201 answered": percentiles(post_latencies),
        "POST answered -> webhook received": slice_stats,
        **{f"  hop: {name}": percentiles(samples) for name, samples in hops.items()},
        "raw aiokafka produce -> consume": raw_stats,
    })
    for name, value in internals.items():
        print(f"  {name:<40} {value * 1000:.1f} ms")
    print(f"  ratio slice/raw: p50 x{ratio('p50_ms') or float('nan'):.1f}, p99 x{ratio('p99_ms') or float('nan'):.1f}")
    cpu_figures = cpu.figures(count, "referral")
    print("  CPU per referral, from the first POST to the last webhook: " + ", ".join(
        f"{name.removeprefix('cpu_').removesuffix('_ms_per_referral')} {f['value']:.1f} ms"
        for name, f in cpu_figures.items() if name.startswith("cpu_"))
        + f"; the cores were {cpu_figures['machine_busy_share']['value']:.0%} busy")
    print_result("slice", {
        "rate_per_s": figure(rate, "referrals/s"),
        **latency_figures("post_to_webhook", slice_latencies, p99_target_ms=P99_TARGET_MS),
        **latency_figures("raw_round_trip", raw),
        "ratio_to_raw_p50": figure(ratio("p50_ms"), "x"),
        "ratio_to_raw_p99": figure(ratio("p99_ms"), "x"),
        **cpu_figures,
        **rss.figures(),
    })
