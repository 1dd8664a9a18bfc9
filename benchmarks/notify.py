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

from benchmarks.common import bench_infra, paced, percentiles, print_table  # noqa: E402
from reflexe.v1 import referral_pb2  # noqa: E402
from reflexe_common.envelope import ts, wrap  # noqa: E402
from reflexe_common.topics import REFERRAL_EVENTS, ensure_topics  # noqa: E402
from reflexe_notify.adapters import store  # noqa: E402
from reflexe_notify.domain.recipients import Recipient  # noqa: E402
from tests.support.desk import sse_events  # noqa: E402
from tests.support.infra import Infra  # noqa: E402
from tests.support.platform import webhook_receiver  # noqa: E402
from tests.support.services import ServiceProcess, eventually, service_env, token  # noqa: E402

DEPARTMENT = "34"
THROUGHPUT_DELIVERIES = 5000


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
    notify = ServiceProcess("reflexe_notify", service_env(infra, NOTIFY_CONCURRENCY="32"), "NOTIFY_HTTP_PORT", log_dir).start()
    producer = AIOKafkaProducer(**infra.kafka_options(), acks="all", linger_ms=0)
    try:
        await notify.wait_ready()
        await producer.start()
        async with webhook_receiver() as (receiver, hook_url), httpx.AsyncClient(base_url=notify.url) as api:
            desk = token("desk", department=DEPARTMENT)
            subscribed = await api.post("/v1/subscriptions", headers=desk,
                                        json={"url": f"{hook_url}/desk", "event_types": ["admission.overdue"]})
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
            elapsed = await paced(rate, count, publish)

            def all_in() -> bool:
                return len(receiver.unique()) - len(warm) >= count and all(r in streamed for r in published)

            await eventually(lambda: asyncio.sleep(0, all_in()), timeout=120, what="every webhook and stream event")
            hooked = {d.json["data"]["referral_id"]: d.received_at for d in receiver.unique().values()}
            webhook_latency = [hooked[r] - t for r, t in published.items() if r in hooked]
            stream_latency = [streamed[r] - t for r, t in published.items() if r in streamed]
            reader.cancel()

            # Throughput: a backlog committed at once, drained by the dispatcher.
            before = len(receiver.deliveries)
            conn = await asyncpg.connect(infra.database_url, server_settings={"search_path": "notify"})
            try:
                async with conn.transaction():
                    body = json.dumps({"type": "admission.overdue", "timestamp": "2026-11-22T10:15:00+00:00",
                                       "data": {"referral_id": "bench", "department": DEPARTMENT}})
                    for i in range(THROUGHPUT_DELIVERIES):
                        await store.enqueue(conn, f"bench-{uuid.uuid4()}", "admission.overdue", DEPARTMENT, body,
                                            [Recipient.desk(DEPARTMENT)], 8)
                started = time.perf_counter()
            finally:
                await conn.close()
            await eventually(lambda: asyncio.sleep(0, len(receiver.deliveries) - before >= THROUGHPUT_DELIVERIES),
                             timeout=300, interval=0.01, what="the backlog drained")
            drained = time.perf_counter() - started
    finally:
        await producer.stop()
        notify.stop()
    print_table(f"Notify benchmark: {count} events at {rate:.0f}/s (publishing took {elapsed:.1f} s)", {
        "published -> desk webhook received": percentiles(webhook_latency),
        "published -> SSE event received": percentiles(stream_latency),
    })
    print(f"  webhook throughput: {THROUGHPUT_DELIVERIES} deliveries in {drained:.2f} s = "
          f"{THROUGHPUT_DELIVERIES / drained:.0f} deliveries/s (NOTIFY_CONCURRENCY=32, local receiver, "
          f"every attempt logged)")


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
