"""Notification latency and webhook throughput of the notify service (run as its own process).

  latency     events published on Kafka at a steady rate (AdmissionOverdue, which the desk hears
              of) → the desk's webhook received by a local receiver, and → the same event
              received by a client of the desk's live stream (SSE); p50/p95/p99
  throughput  a backlog of deliveries committed at once → webhook deliveries per second sustained
              against a local receiver (signing, HTTP, and the delivery log's writes included)

Run alone: python -m benchmarks.notify [--rate 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (RssWatch, bench_infra, cpu_seconds, figure, latency_figures, paced, percentiles,  # noqa: E402
                               print_result, print_table, sized)
from reflexe.v1 import referral_pb2  # noqa: E402
from reflexe_common.envelope import ts, wrap  # noqa: E402
from reflexe_common.topics import REFERRAL_EVENTS, ensure_topics  # noqa: E402
from reflexe_notify.adapters import store  # noqa: E402
from reflexe_notify.domain.recipients import Recipient  # noqa: E402
from tests.support.desk import sse_events  # noqa: E402
from tests.support.infra import Infra  # noqa: E402
from tests.support.receiver import WebhookReceiver  # noqa: E402
from tests.support.services import ServiceProcess, eventually, service_env, token  # noqa: E402

DEPARTMENT = "34"
WEBHOOK_P99_TARGET_MS = 50  # event → webhook, at 100 events/s
STREAM_P99_TARGET_MS = 30  # event → SSE, at 100 events/s
DELIVERIES_PER_SECOND_TARGET = 2000


async def _stream_reader(url: str, received: dict[str, float], opened: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
        async with http.stream("GET", f"{url}/v1/desks/{DEPARTMENT}/stream",
                               headers={**token("desk", department=DEPARTMENT), "Accept": "text/event-stream"}) as response:
            response.raise_for_status()
            opened.set()
            async for event in sse_events(response):
                received.setdefault(json.loads(event.data)["data"].get("referral_id", ""), time.time())


async def run(infra: Infra, rate: float, seconds: float, log_dir: Path) -> None:
    count = int(rate * seconds)
    throughput_deliveries = sized(5000, 300)
    notify = ServiceProcess("reflexe_notify", service_env(infra, NOTIFY_CONCURRENCY="32"), "NOTIFY_HTTP_PORT", log_dir).start()
    rss = RssWatch()
    rss.watch("notify", notify.proc.pid)
    producer = AIOKafkaProducer(**infra.kafka_options(), acks="all", linger_ms=0)
    try:
        await notify.wait_ready()
        await producer.start()
        async with WebhookReceiver() as receiver, httpx.AsyncClient(base_url=notify.url, timeout=60) as api:
            desk = token("desk", department=DEPARTMENT)
            subscribed = await api.post("/v1/subscriptions", headers=desk,
                                        json={"url": f"{receiver.url}/desk", "event_types": ["admission.overdue"]})
            subscribed.raise_for_status()
            streamed: dict[str, float] = {}
            opened = asyncio.Event()
            reader = asyncio.create_task(_stream_reader(notify.url, streamed, opened))
            await asyncio.wait_for(opened.wait(), 30)
            published: dict[str, float] = {}

            async def publish(_: int) -> None:
                referral_id = str(uuid.uuid4())
                header = referral_pb2.ReferralEventHeader(referral_id=referral_id, department=DEPARTMENT, actor="system")
                header.occurred_at.CopyFrom(ts(datetime.now(UTC)))
                envelope = wrap(referral_pb2.AdmissionOverdue(header=header), "bench")
                published[referral_id] = time.time()
                await producer.send_and_wait(REFERRAL_EVENTS.name, envelope.value(), key=DEPARTMENT.encode(),
                                             headers=envelope.headers())

            await paced(10, 30, publish)  # warm-up
            await eventually(lambda: asyncio.sleep(0, len(receiver.unique()) >= 30 and len(streamed) >= 30),
                             timeout=60, what="warm-up")
            published.clear()
            warm = set(receiver.unique())
            cpu_before = cpu_seconds(notify.proc.pid)
            elapsed = await paced(rate, count, publish)

            def all_in() -> bool:
                return len(receiver.unique()) - len(warm) >= count and all(r in streamed for r in published)

            await eventually(lambda: asyncio.sleep(0, all_in()), timeout=120, what="every webhook and stream event")
            cpu_per_event = (cpu_seconds(notify.proc.pid) - cpu_before) / count
            hooked = {d.json["data"]["referral_id"]: d.at for d in receiver.unique().values()}
            webhook_latency = [hooked[r] - t for r, t in published.items() if r in hooked]
            stream_latency = [streamed[r] - t for r, t in published.items() if r in streamed]
            reader.cancel()

            # Throughput: a backlog committed at once, drained by the dispatcher.
            before = len(receiver.received)
            conn = await asyncpg.connect(infra.database_url, server_settings={"search_path": "notify"})
            try:
                async with conn.transaction():
                    body = json.dumps({"type": "admission.overdue", "timestamp": "2026-11-22T10:15:00+00:00",
                                       "data": {"referral_id": "bench", "department": DEPARTMENT}})
                    for i in range(throughput_deliveries):
                        await store.enqueue(conn, f"bench-{uuid.uuid4()}", "admission.overdue", DEPARTMENT, body,
                                            [Recipient.desk(DEPARTMENT)], 8)
                started = time.perf_counter()
                cpu_before = cpu_seconds(notify.proc.pid)
            finally:
                await conn.close()
            await eventually(lambda: asyncio.sleep(0, len(receiver.received) - before >= throughput_deliveries),
                             timeout=300, interval=0.01, what="the backlog drained")
            drained = time.perf_counter() - started
            cpu_per_delivery = (cpu_seconds(notify.proc.pid) - cpu_before) / throughput_deliveries
    finally:
        rss.stop()
        await producer.stop()
        notify.stop()
    print_table(f"Notify benchmark: {count} events at {rate:.0f}/s (publishing took {elapsed:.1f} s)", {
        "published -> desk webhook received": percentiles(webhook_latency),
        "published -> SSE event received": percentiles(stream_latency),
    })
    print(f"  webhook throughput: {throughput_deliveries} deliveries in {drained:.2f} s = "
          f"{throughput_deliveries / drained:.0f} deliveries/s (NOTIFY_CONCURRENCY=32, local receiver, "
          f"every attempt logged)")
    print(f"  notify's CPU: {cpu_per_event * 1e3:.2f} ms per event (webhook and stream entry included), "
          f"{cpu_per_delivery * 1e3:.2f} ms per delivery of the backlog")
    print_result("notify", {
        "rate_per_s": figure(rate, "events/s"),
        **latency_figures("event_to_webhook", webhook_latency, p99_target_ms=WEBHOOK_P99_TARGET_MS),
        **latency_figures("event_to_sse", stream_latency, p99_target_ms=STREAM_P99_TARGET_MS),
        "webhook_deliveries_per_s": figure(throughput_deliveries / drained, "deliveries/s",
                                           DELIVERIES_PER_SECOND_TARGET, ">="),
        "notify_cpu_ms_per_event": figure(cpu_per_event * 1e3, "ms"),
        "notify_cpu_ms_per_delivery": figure(cpu_per_delivery * 1e3, "ms"),
        **rss.figures(),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="reflexe-bench-logs-"))
    print(f"service logs: {log_dir}")
    with bench_infra() as infra:
        asyncio.run(ensure_topics(infra.kafka()))
        asyncio.run(run(infra, args.rate, args.seconds, log_dir))


if __name__ == "__main__":
    main()
