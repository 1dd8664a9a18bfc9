"""The chaos run's traffic driver: the simulator's hospitals, HADs and desks (reflexe_simulator's
library: scenario, actors, doors, webhook receiver), through the platform's public doors (REST, FHIR,
HL7 over MLLP), with two journals for the checker:

- accepted.jsonl: every referral the platform answered 2xx (REST or FHIR) and every ADT message it
  acknowledged AA, written as the answer arrives;
- webhooks.jsonl: every webhook the receiver verified, before it drops a retried webhook-id.

    python -m chaos.driver --referrals 10000 --seconds 600 --journal-dir DIR ...

The file `started` appears in the journal dir when the traffic starts. After --referrals accepted
referrals (or --max-seconds, by default 3 x --seconds) no new referral is posted; --settle-seconds later the traffic stops
(no more answers, admissions or desk actions), the receiver goes on receiving, and the file
`quiet` appears in the journal dir. SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from datetime import datetime, time as dtime
from pathlib import Path
from typing import Any

import uvicorn

from reflexe_common.local_idp import LocalIdentityProvider
from reflexe_simulator.__main__ import Subscriptions, _bind, _IdentityProviderTokens, _Server, _setup_had
from reflexe_simulator.actors import PARIS, Counters, SimClock, World, traffic_loop
from reflexe_simulator.adt import Ack, MllpSender
from reflexe_simulator.client import PlatformClient, Result
from reflexe_simulator.doors import DoorFractions, plan_doors
from reflexe_simulator.scenario import build_scenario
from reflexe_simulator.webhooks import WebhookReceiver, authentic, build_app

from chaos.connections import TIMEOUT, ReclaimingTransport

log = logging.getLogger("chaos.driver")


class Journal:
    """One JSON object per line, flushed at once: the checker reads what was acknowledged."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()


class JournalingClient(PlatformClient):
    """The simulator's client, journaling each referral the platform accepted."""

    def __init__(self, *args: Any, journal: Journal, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journal = journal
        self.accepted: set[str] = set()
        self.enough = asyncio.Event()
        self.target = 0

    def _accepted(self, door: str, referral_id: str, result: Result) -> Result:
        if result.ok:
            self.journal.write(door=door, key=referral_id, status=result.status)
            self.accepted.add(referral_id)
            if self.target and len(self.accepted) >= self.target:
                self.enough.set()
        return result

    async def post_referral(self, source_finess: str, body: dict[str, Any]) -> Result:
        return self._accepted("rest", body["referral_id"], await super().post_referral(source_finess, body))

    async def fhir_create_service_request(self, source_finess: str, resource: dict[str, Any], referral_id: str) -> Result:
        return self._accepted("fhir", referral_id, await super().fhir_create_service_request(source_finess, resource, referral_id))


class JournalingSender(MllpSender):
    """The simulator's MLLP sender, journaling each message acknowledged AA."""

    def __init__(self, *args: Any, journal: Journal, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journal = journal

    async def send(self, sender: str, message: str) -> Ack:
        ack = await super().send(sender, message)
        if ack.accepted:
            control_id = message.split("\r", 1)[0].split("|")[9]
            self.journal.write(door="hl7", key=f"{sender}/{control_id}", trigger=message.split("\r", 1)[0].split("|")[8])
        return ack


class JournalingReceiver(WebhookReceiver):
    """The simulator's receiver, journaling every verified delivery before deduplication."""

    def __init__(self, *args: Any, journal: Journal, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journal = journal
        self.handle = True

    async def receive(self, kind: str, key: str, headers, body: bytes):
        secret = self.secrets.get((kind, key))
        if secret is not None and authentic(secret, headers, body):
            lowered = {k.lower(): v for k, v in headers.items()}
            try:
                event_type = str(json.loads(body).get("type", ""))
            except ValueError:
                event_type = ""
            self.journal.write(recipient=f"{kind}:{key}", webhook_id=lowered.get("webhook-id", ""), type=event_type,
                               body=body.decode("utf-8", "replace"), at=time.time())
        if not self.handle:  # the traffic has stopped: received and journaled, no more answers
            return 200, {"status": "ok"}
        return await super().receive(kind, key, headers, body)


class LoopLag:
    """How late the event loop runs a callback due now (the worst since the last look)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.worst = 0.0

    async def watch(self) -> None:
        while True:
            due = time.monotonic() + self.every
            await asyncio.sleep(self.every)
            self.worst = max(self.worst, time.monotonic() - due)

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaos-driver", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--referrals", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=600.0, help="how long the traffic should take (sets the rate)")
    p.add_argument("--departments", default="34,31")
    p.add_argument("--speed", type=float, default=240.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--journal-dir", type=Path, required=True)
    p.add_argument("--webhook-port", type=int, required=True)
    p.add_argument("--referral-url", required=True)
    p.add_argument("--capacity-url", required=True)
    p.add_argument("--notify-url", required=True)
    p.add_argument("--mllp-host", default="127.0.0.1")
    p.add_argument("--mllp-port", type=int, required=True)
    p.add_argument("--hold-minutes", type=float, default=30.0)
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="post no new referral after this long, however many were accepted (default 3 x --seconds)")
    p.add_argument("--settle-seconds", type=float, default=60.0,
                   help="after the last referral, how long the actors go on with those posted (default 60)")
    return p


def daily_volume(referrals: int, departments: int, seconds: float, speed: float) -> float:
    """Referrals per simulated day and department for `referrals` in `seconds` of real time (the
    daily profile has quiet hours: a tenth more than the plain average)."""
    simulated_days = seconds * speed / 86400
    return 1.1 * referrals / departments / simulated_days


async def run(args: argparse.Namespace) -> None:
    departments = [d.strip() for d in args.departments.split(",") if d.strip()]
    scenario = build_scenario(departments, args.seed)
    counters = Counters()
    pseudonym_key = os.environ.get("GATEWAY_PSEUDONYM_KEY", "")
    doors = plan_doors(scenario, DoorFractions() if pseudonym_key else DoorFractions(hl7_hospitals=0.0))
    args.journal_dir.mkdir(parents=True, exist_ok=True)
    accepted, webhooks = Journal(args.journal_dir / "accepted.jsonl"), Journal(args.journal_dir / "webhooks.jsonl")
    idp = LocalIdentityProvider.from_env(os.environ)
    transport = ReclaimingTransport()
    client = JournalingClient(args.referral_url, args.capacity_url, args.notify_url, _IdentityProviderTokens(idp), counters,
                              journal=accepted, attempts=8, timeout=TIMEOUT, transport=transport)
    client.target = args.referrals
    adt = JournalingSender(args.mllp_host, args.mllp_port, counters, attempts=8, journal=accepted)
    clock = SimClock(datetime.combine(datetime.now(PARIS).date(), dtime(8, 0), tzinfo=PARIS), args.speed)
    world = World(scenario, client, clock, counters, seed=args.seed, hold_minutes=args.hold_minutes, doors=doors, adt=adt,
                  pseudonym_key=pseudonym_key.encode() if pseudonym_key else None)
    receiver = JournalingReceiver(world.on_delivery, counters, journal=webhooks)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    sock = _bind("127.0.0.1", args.webhook_port)
    if sock is None:
        raise SystemExit(f"the webhook receiver cannot listen on {args.webhook_port}")
    server = _Server(uvicorn.Config(build_app(receiver), log_level="warning", lifespan="off", access_log=False))
    server_task = loop.create_task(server.serve(sockets=[sock]))
    await asyncio.gather(*(_setup_had(world, had, True) for had in world.hads.values()))
    subscriptions = Subscriptions(world, receiver, f"http://127.0.0.1:{args.webhook_port}")
    await subscriptions.subscribe_missing()
    while not subscriptions.complete:  # every HAD and desk hears of its events from the first referral
        await asyncio.sleep(2)
        await subscriptions.subscribe_missing()

    volume = daily_volume(args.referrals, len(departments), args.seconds, args.speed)
    log.info("traffic: %d referrals over ~%.0f s, %.0f per simulated day and department, x%g", args.referrals, args.seconds,
             volume, args.speed)
    (args.journal_dir / "started").write_text(f"{time.time()}\n")  # the nemesis starts with the traffic
    actors = [loop.create_task(traffic_loop(world, d, volume, args.seed)) for d in scenario.departments.values()]
    actors += [loop.create_task(had.capacity_loop()) for had in world.hads.values()]
    actors += [loop.create_task(world.desks[code].poll_loop(lambda: False)) for code in scenario.departments]
    started = time.monotonic()
    lag = LoopLag()
    actors.append(loop.create_task(lag.watch()))
    deadline = args.max_seconds or 3 * args.seconds
    while not (client.enough.is_set() or stop.is_set() or time.monotonic() - started > deadline):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.enough.wait(), 10)
        # The loop's lag and the pool's reclaimed slots say whether the driver itself keeps up.
        log.info("accepted %d/%d referrals after %.0f s (loop lag up to %.1f s, %d pool slots reclaimed); %s",
                 len(client.accepted), args.referrals, time.monotonic() - started, lag.take(), transport.reclaimed,
                 counters.line())
    # No new referral; for --settle-seconds the HADs, hospitals and desks go on with those posted
    # (offers answered, patients admitted), then the traffic stops and the receiver goes on.
    posting = actors[:len(scenario.departments)]
    for task in posting:
        task.cancel()
    log.info("no new referral after %d accepted, %.0f s; the others play on for %.0f s", len(client.accepted),
             time.monotonic() - started, args.settle_seconds)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.settle_seconds)
    receiver.handle = False
    for task in [*actors, *world.tasks]:
        task.cancel()
    await asyncio.gather(*actors, *world.tasks, return_exceptions=True)
    (args.journal_dir / "quiet").write_text(json.dumps({"accepted": len(client.accepted),
                                                        "seconds": round(time.monotonic() - started, 1),
                                                        "counters": dict(counters.values)}) + "\n")
    log.info("traffic stopped after %d accepted referrals, %.0f s; %s", len(client.accepted),
             time.monotonic() - started, counters.line())
    await stop.wait()
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server_task, 5)
    await client.aclose()
    await adt.aclose()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-5s %(name)s %(message)s", stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("reflexe_simulator").setLevel(logging.WARNING)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
