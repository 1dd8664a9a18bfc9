"""Command line: play a realistic, time-accelerated day against the Réflexe services.

    python -m reflexe_simulator --departments 34,31 --speed 60 --duration 600

See ``--help`` for every option. Only the public HTTP APIs and webhooks are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from datetime import datetime, time as dtime
from pathlib import Path
from typing import Any

import uvicorn

from reflexe_common.local_idp import LocalIdentityProvider
from reflexe_simulator.actors import PARIS, Counters, HadActor, SimClock, World, traffic_loop
from reflexe_simulator.adt import DryRunSender, MllpSender
from reflexe_simulator.client import PlatformClient, Result
from reflexe_simulator.doors import (DEFAULT_FHIR_HADS, DEFAULT_FHIR_HOSPITALS, DEFAULT_HL7_HADS, DEFAULT_HL7_HOSPITALS,
                                     DoorFractions, gateway_senders, plan_doors)
from reflexe_simulator.scenario import Scenario, build_scenario
from reflexe_simulator.traffic import REFERRALS_PER_100K_PER_DAY, default_daily_volume
from reflexe_simulator.webhooks import WebhookReceiver, build_app

log = logging.getLogger("reflexe_simulator")

DESCRIPTION = """\
Réflexe simulator: plays a realistic, time-accelerated day of home-hospitalisation (HAD)
referrals for one or more departments, using only the platform's public APIs.

What it does
  * builds a deterministic scenario from --seed: 3-5 fictional HAD establishments per
    department (FINESS <dept>9<kind><seq><Luhn key>), zones made of the department's REAL
    communes (every commune covered, overlap around the prefecture), emergency departments
    (ED/UHCD/wards), EHPADs and GP practices;
  * registers the HADs (PUT /v1/hads/{finess}, admin token) and declares their capacity
    (POST /v1/hads/{finess}/capacity), then re-declares every 1.5-4 simulated hours (places
    drift with admissions and discharges; sometimes SATURATED, rarely CLOSED; one HAD per
    department often lets its declaration go stale);
  * posts referrals (POST /v1/referrals, hospital token) following a daily profile: ED
    arrivals peak late morning and early evening, UHCD after the morning round, EHPAD/wards
    in office hours, GPs in consultation hours;
  * runs a webhook receiver on --webhook-port and subscribes each HAD (HAD token) and each
    desk (desk token) to the notify service (POST /v1/subscriptions) with its own secret;
    deliveries are verified (Standard Webhooks signature; bad ones get 401 and are counted)
    and deduplicated by webhook-id;
  * HADs answer offer.proposed within the hold they were given, after a share of what is left
    of it (median a third, slower at night; never longer than --hold-minutes simulated
    minutes), and a few (~4% by day, ~8% at night) only after it has expired: ~70% accept,
    ~25% decline with a reason, ~5% never answer; accepted
    patients are admitted a few simulated hours later (by day), then discharged after their
    expected stay;
  * some HADs (answering through the REST API) accept a referral that has no favourable avis
    HAD "pending evaluation": their liaison nurse visits a few simulated hours later and gives
    her avis, and the HAD confirms (~80%) or withdraws with its reason (~20%), which passes the
    referral to the next HAD; liaison nurses at the hospitals also give the avis of some
    referrals posted without one (a few unfavourable, which closes them);
  * a referral posted without patient consent or GP agreement waits incomplete until the
    hospital updates it hours later (PATCH on the version it read, If-Match), or cancels it on
    a refusal; ~12% of referrals are planned (a planned admission date);
  * desks log alerts and act on escalations: widen to neighbouring departments (~40%),
    offer to a chosen HAD from the capacity board (~35%), or close (OTHER, "pas de solution
    HAD");
  * uses the platform's doors as real systems do (deterministic from --seed): a share of the
    hospitals post their referrals as FHIR ServiceRequests (POST {fhir}/ServiceRequest,
    If-None-Exist), a share send ADT over MLLP to the HL7 gateway (A03 when a referred ED patient
    leaves the ED, A06/A01 when one is hospitalised instead, which cancels the referral), with
    names, NIR and birth date in PID as a hospital's system does (the gateway must drop them);
    a share of the HADs answer offers by updating their FHIR Task, a share report admissions
    and discharges by HL7 A01/A03; the others use the REST API. Every ACK must be AA;
    --print-gateway-senders prints the gateway's allow-list (GATEWAY_SENDERS) for them;
  * prints one line per event, running counters every --report-every seconds, and how many
    went through each door.

Time: the simulated clock runs --speed times faster than real time; the platform keeps real
time (./reflexe up scales its holds and clocks by the same speed; a platform left at 30-minute
holds works too), so delays sampled in simulated time are divided by --speed, answers are timed
against each offer's real hold_until, and timestamps sent are real ones.

Environment: REFERRAL_URL, CAPACITY_URL, NOTIFY_URL, FHIR_URL, OIDC_ISSUER, GATEWAY_MLLP_HOST,
GATEWAY_MLLP_PORT, GATEWAY_PSEUDONYM_KEY (flags take precedence).
"""


def _departments(value: str) -> list[str]:
    codes = [c.strip().upper() for c in value.split(",") if c.strip()]
    if not codes:
        raise argparse.ArgumentTypeError("at least one department code")
    return codes


def _fraction(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value!r}") from exc
    if not 0.0 <= fraction <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value!r}")
    return fraction


def door_fractions(args: argparse.Namespace) -> DoorFractions:
    """The doors asked for; hospitals send ADT only with the key they share with the gateway."""
    return DoorFractions(fhir_hospitals=args.fhir_hospitals, hl7_hospitals=args.hl7_hospitals if args.pseudonym_key else 0.0,
                         fhir_hads=args.fhir_hads, hl7_hads=args.hl7_hads)


def _start(value: str) -> datetime:
    try:
        if "T" in value or "-" in value:
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=PARIS)
        hour, minute = (int(x) for x in value.split(":"))
        return datetime.combine(datetime.now(PARIS).date(), dtime(hour, minute), tzinfo=PARIS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HH:MM or an ISO date-time, got {value!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="reflexe-simulator", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("scenario")
    g.add_argument("--departments", type=_departments, default=["34", "31"], metavar="CODES",
                   help="comma-separated department codes to simulate (default: 34,31)")
    g.add_argument("--seed", type=int, default=1, help="seed of the scenario and of the traffic (default: 1)")
    g.add_argument("--print-scenario", action="store_true", help="print the scenario as JSON and exit")
    g = p.add_argument_group("time and volume")
    g.add_argument("--speed", type=float, default=60.0,
                   help="simulated seconds per real second (default: 60 = one simulated minute per second)")
    g.add_argument("--rate", type=float, default=None, metavar="PER_DAY",
                   help=f"referrals per simulated day per department (default: {REFERRALS_PER_100K_PER_DAY} per "
                        "100,000 inhabitants: Hérault ~18, Haute-Garonne ~22)")
    g.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                   help="stop after this many REAL seconds (0 = run until interrupted; default: 0)")
    g.add_argument("--start", type=_start, default=None, metavar="HH:MM|ISO",
                   help="simulated start time, local (Europe/Paris) (default: today 07:00)")
    g.add_argument("--hold-minutes", type=float, default=30.0,
                   help="the platform's hold for WITHIN_24H offers, in simulated minutes: HADs answer within it (and "
                        "within the real hold the offer carries), except the few modelled late ones (default: 30)")
    g = p.add_argument_group("platform")
    g.add_argument("--referral-url", default=env.get("REFERRAL_URL", "http://127.0.0.1:8001"),
                   help="referral service base URL (env REFERRAL_URL; default http://127.0.0.1:8001)")
    g.add_argument("--capacity-url", default=env.get("CAPACITY_URL", "http://127.0.0.1:8002"),
                   help="capacity service base URL (env CAPACITY_URL; default http://127.0.0.1:8002)")
    g.add_argument("--notify-url", default=env.get("NOTIFY_URL", "http://127.0.0.1:8004"),
                   help="notify service base URL (env NOTIFY_URL; default http://127.0.0.1:8004)")
    g.add_argument("--oidc-issuer", default=env.get("OIDC_ISSUER"),
                   help="the local identity provider's realm (env OIDC_ISSUER, as deploy/local/keycloak.sh env "
                        "prints it): every actor gets its tokens there, systems by client credentials, desks "
                        "and the admin as their demo users (admin: env KEYCLOAK_ADMIN_USER/PASSWORD)")
    g.add_argument("--identities-out", type=Path, default=None, metavar="FILE",
                   help="append the hospitals' own patient records (fictional names, NIR, birth dates: never sent) "
                        "to FILE as JSON lines, for a privacy scan to look for them")
    g.add_argument("--no-register", action="store_true", help="do not (re)register the HADs in the capacity registry")
    g = p.add_argument_group("doors (FHIR R4, HL7 v2 over MLLP; the rest use the REST API)")
    g.add_argument("--fhir-url", default=env.get("FHIR_URL"),
                   help="the FHIR API's base URL (env FHIR_URL; default <referral-url>/fhir)")
    g.add_argument("--mllp-host", default=env.get("GATEWAY_MLLP_HOST", "127.0.0.1"),
                   help="the HL7 gateway's MLLP host (env GATEWAY_MLLP_HOST; default 127.0.0.1)")
    g.add_argument("--mllp-port", type=int, default=int(env.get("GATEWAY_MLLP_PORT") or 2575),
                   help="the HL7 gateway's MLLP port (env GATEWAY_MLLP_PORT; default 2575)")
    g.add_argument("--pseudonym-key", default=env.get("GATEWAY_PSEUDONYM_KEY"), metavar="KEY",
                   help="the key hospitals sending ADT share with the gateway for their patients' pseudonyms (env "
                        "GATEWAY_PSEUDONYM_KEY, better than this flag, which other local users can read); without "
                        "it, no hospital sends ADT")
    for name, default, what in (("fhir-hospitals", DEFAULT_FHIR_HOSPITALS, "hospitals posting referrals as FHIR ServiceRequests"),
                                ("hl7-hospitals", DEFAULT_HL7_HOSPITALS, "hospitals sending ADT (A03, A06/A01) over MLLP"),
                                ("fhir-hads", DEFAULT_FHIR_HADS, "HADs answering offers by updating their FHIR Task"),
                                ("hl7-hads", DEFAULT_HL7_HADS, "HADs reporting admissions and discharges by HL7 A01/A03")):
        g.add_argument(f"--{name}", type=_fraction, default=default, metavar="FRACTION",
                       help=f"share of the {what}, per department (0 none, 1 all; above 0, at least one; default {default:.2f})")
    g.add_argument("--print-gateway-senders", action="store_true",
                   help="print the HL7 gateway's allow-list (GATEWAY_SENDERS JSON) for the establishments that send "
                        "ADT, from --gateway-networks, and exit")
    g.add_argument("--gateway-networks", default="127.0.0.1/32", metavar="CIDRS",
                   help="comma-separated networks the simulator connects to the gateway from (default 127.0.0.1/32)")
    g.add_argument("--dry-run", action="store_true",
                   help="call no service: log the referrals and declarations that would be sent")
    g = p.add_argument_group("webhooks")
    g.add_argument("--webhook-host", default="127.0.0.1", help="interface of the webhook receiver (default 127.0.0.1)")
    g.add_argument("--webhook-port", type=int, default=8090, help="port of the webhook receiver (default 8090)")
    g.add_argument("--webhook-base", default=None,
                   help="base URL the notify service should call (default http://127.0.0.1:<webhook-port>)")
    g.add_argument("--poll", choices=("auto", "always", "never"), default="auto",
                   help="poll the desk's open referrals for offers and escalations: 'auto' while any webhook "
                        "subscription is missing (default), 'always', or 'never'")
    g = p.add_argument_group("output")
    g.add_argument("--report-every", type=float, default=10.0, metavar="SECONDS",
                   help="print the running counters every N real seconds (default 10)")
    g.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return p


class DryRunClient(PlatformClient):
    """Answers every call locally with success: nothing leaves the process."""

    async def call(self, service: str, method: str, path: str, token: str, body: Any = None, **_: Any) -> Result:
        log.debug("dry-run %s %s %s %s", service, method, path, json.dumps(body, ensure_ascii=False) if body else "")
        if service == "fhir" and method == "GET" and path.startswith("/Task/"):
            return Result(200, {"resourceType": "Task", "id": path.rsplit("/", 1)[1], "status": "requested",
                                "intent": "order"})
        return Result(201 if method in ("POST", "PUT") else 200, {})


class _IdentityProviderTokens:
    """The actors' tokens from the local identity provider (clients and demo users made on demand)."""

    def __init__(self, idp: LocalIdentityProvider) -> None:
        self.idp = idp

    async def fetch(self, role: str, *, finess: str | None = None, department: str | None = None) -> tuple[str, float]:
        return await self.idp.issue(role, finess=finess, department=department)

    async def aclose(self) -> None:
        await self.idp.aclose()


class _NoTokens:
    async def fetch(self, role: str, *, finess: str | None = None, department: str | None = None) -> tuple[str, float]:
        return "dry-run", float("inf")


class _Server(uvicorn.Server):
    """The receiver runs inside the simulator's loop; the simulator owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def _bind(host: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        log.error("webhook receiver cannot listen on %s:%d (%s): continuing without webhooks", host, port, exc)
        sock.close()
        return None
    sock.set_inheritable(True)
    return sock


class Subscriptions:
    """Subscribes every simulated HAD and desk to the notify service; retries the missing ones."""

    def __init__(self, world: World, receiver: WebhookReceiver, base: str) -> None:
        self.world, self.receiver, self.base = world, receiver, base.rstrip("/")
        self.wanted: list[tuple[str, str]] = [("had", h.finess) for h in world.scenario.hads]
        self.wanted += [("desk", code) for code in world.scenario.departments]
        self.done: set[tuple[str, str]] = set()
        self.poll_meanwhile = False

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.wanted)

    async def _subscribe(self, kind: str, key: str) -> None:
        client = self.world.client
        token = await (client.tokens.get("had", finess=key) if kind == "had" else client.tokens.get("desk", department=key))
        url = f"{self.base}/hooks/{kind}/{key}"
        result = await client.subscribe(token, url, self.receiver.secret_for(kind, key))
        if result.ok or result.conflict:
            self.done.add((kind, key))
        elif result.status:
            log.warning("subscription of %s %s refused: %s %s", kind, key, result.status, result.code or result.data)

    async def subscribe_missing(self) -> None:
        missing = [w for w in self.wanted if w not in self.done]
        await asyncio.gather(*(self._subscribe(kind, key) for kind, key in missing))
        if self.complete:
            log.info("webhook subscriptions: %d/%d in place", len(self.done), len(self.wanted))
        else:
            log.warning("webhook subscriptions: %d/%d in place (notify at %s); retrying in the background%s",
                        len(self.done), len(self.wanted), self.world.client.urls["notify"],
                        "; polling the desks' lists meanwhile" if self.poll_meanwhile else "")

    async def keep_subscribing(self, every: float = 15.0) -> None:
        await self.subscribe_missing()
        while not self.complete:
            await asyncio.sleep(every)
            every = min(every * 2, 120.0)
            await self.subscribe_missing()


async def _setup_had(world: World, had: HadActor, register: bool) -> None:
    if register:
        result = await world.client.register_had(had.spec.finess, had.spec.registry_body())
        if not result.ok:
            log.error("could not register %s %s: %s %s", had.spec.finess, had.spec.name, result.status, result.code or result.error)
            return
    await had.declare("start")


async def _reporter(world: World, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        log.info("[%s] counters %s", world.clock.now().strftime("%a %H:%M"), world.counters.line())
        log.info("[%s] doors: %s", world.clock.now().strftime("%a %H:%M"), world.counters.doors_line())
        log.info("[%s] paths: %s", world.clock.now().strftime("%a %H:%M"), world.counters.paths_line())


async def run(args: argparse.Namespace) -> Counters:
    scenario: Scenario = build_scenario(args.departments, args.seed)
    counters = Counters()
    if not args.pseudonym_key and args.hl7_hospitals > 0:
        log.warning("no pseudonym key shared with the HL7 gateway (--pseudonym-key or GATEWAY_PSEUDONYM_KEY): "
                    "no hospital sends ADT")
    doors = plan_doors(scenario, door_fractions(args))
    adt: MllpSender | None = None
    if args.dry_run:
        client: PlatformClient = DryRunClient(args.referral_url, args.capacity_url, args.notify_url, _NoTokens(), counters,
                                              fhir_url=args.fhir_url)
        adt = DryRunSender(counters)
    else:
        if not args.oidc_issuer:
            raise SystemExit("the simulator needs the identity provider: --oidc-issuer or OIDC_ISSUER")
        idp = LocalIdentityProvider.from_env({**os.environ, "OIDC_ISSUER": args.oidc_issuer})
        client = PlatformClient(args.referral_url, args.capacity_url, args.notify_url, _IdentityProviderTokens(idp),
                                counters, fhir_url=args.fhir_url)
        if doors.hl7_hospitals or doors.hl7_hads:
            adt = MllpSender(args.mllp_host, args.mllp_port, counters)
    start = args.start or datetime.combine(datetime.now(PARIS).date(), dtime(7, 0), tzinfo=PARIS)
    clock = SimClock(start, args.speed)
    world = World(scenario, client, clock, counters, seed=args.seed, hold_minutes=args.hold_minutes, dry_run=args.dry_run,
                  doors=doors, adt=adt, pseudonym_key=args.pseudonym_key.encode() if args.pseudonym_key else None)
    if args.identities_out:
        identities = args.identities_out.open("a", encoding="utf-8")

        def keep_identity(record) -> None:
            identities.write(json.dumps(record.as_json()) + "\n")
            identities.flush()  # the scan may read while the simulator runs

        world.identity_sink = keep_identity
    receiver = WebhookReceiver(world.on_delivery, counters)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    for code, dept in scenario.departments.items():
        volume = args.rate if args.rate is not None else default_daily_volume(dept.population)
        log.info("department %s %s: %d communes, %d HADs (%d places), %d hospitals, %d EHPADs, %d GP practices, "
                 "%.1f referrals/day", code, dept.name, len(dept.communes), len(dept.hads),
                 sum(h.authorised_places for h in dept.hads), len(dept.hospitals), len(dept.ehpads), len(dept.gps), volume)
    log.info("speed x%g (a simulated day lasts %.1f real minutes), simulated start %s, services: referral %s, capacity %s, "
             "notify %s, FHIR %s, HL7 MLLP %s:%d%s", args.speed, 1440 / args.speed, start.strftime("%a %d %b %H:%M"),
             args.referral_url, args.capacity_url, args.notify_url, client.urls["fhir"], args.mllp_host, args.mllp_port,
             " (DRY RUN)" if args.dry_run else "")
    log.info("doors: FHIR ServiceRequests from %d hospitals, ADT from %d hospitals, FHIR Task answers from %d HADs, "
             "ADT from %d HADs (the others: REST)", len(doors.fhir_hospitals), len(doors.hl7_hospitals),
             len(doors.fhir_hads), len(doors.hl7_hads))

    server, server_task = None, None
    subscriptions: Subscriptions | None = None
    background: list[asyncio.Task] = []

    def polling() -> bool:
        if args.dry_run or args.poll == "never":
            return False
        return args.poll == "always" or subscriptions is None or not subscriptions.complete

    async def play() -> None:
        nonlocal server, server_task, subscriptions
        if not args.dry_run:
            sock = _bind(args.webhook_host, args.webhook_port)
            if sock is not None:
                config = uvicorn.Config(build_app(receiver), log_level="warning", lifespan="off", access_log=False)
                server = _Server(config)
                server_task = loop.create_task(server.serve(sockets=[sock]))
                subscriptions = Subscriptions(world, receiver, args.webhook_base or f"http://127.0.0.1:{args.webhook_port}")
                subscriptions.poll_meanwhile = args.poll != "never"
                background.append(loop.create_task(subscriptions.keep_subscribing()))
        setups = await asyncio.gather(*(_setup_had(world, had, not args.no_register) for had in world.hads.values()),
                                      return_exceptions=True)
        for had, outcome in zip(world.hads.values(), setups):
            if isinstance(outcome, BaseException):  # that HAD sits the day out; the others play on
                log.error("could not set up %s: %r", had.spec.name, outcome, exc_info=outcome)
        for code, dept in scenario.departments.items():
            volume = args.rate if args.rate is not None else default_daily_volume(dept.population)
            background.append(loop.create_task(traffic_loop(world, dept, volume, args.seed)))
            background.append(loop.create_task(world.desks[code].poll_loop(polling)))
        for had in world.hads.values():
            background.append(loop.create_task(had.capacity_loop()))
        background.append(loop.create_task(_reporter(world, args.report_every)))

    try:
        background.append(loop.create_task(play()))
        if args.duration > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.duration)
        else:
            await stop.wait()
    finally:
        pending = [*background, *world.tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if server is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server_task, timeout=5)
        await client.aclose()
        if adt is not None:
            await adt.aclose()
        log.info("[%s] final counters %s", clock.now().strftime("%a %H:%M"), counters.line())
        log.info("[%s] doors: %s", clock.now().strftime("%a %H:%M"), counters.doors_line())
        log.info("[%s] paths: %s", clock.now().strftime("%a %H:%M"), counters.paths_line())
    return counters


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)-5s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.print_scenario:
            scenario = build_scenario(args.departments, args.seed)
            print(json.dumps({**scenario.summary(), "doors": plan_doors(scenario, door_fractions(args)).summary()},
                             ensure_ascii=False, indent=2))
            return 0
        if args.print_gateway_senders:
            doors = plan_doors(build_scenario(args.departments, args.seed), door_fractions(args))
            networks = [n.strip() for n in args.gateway_networks.split(",") if n.strip()]
            print(json.dumps(gateway_senders(doors, networks)))
            return 0
        asyncio.run(run(args))
    except ValueError as exc:  # an unknown department, a bad option value
        print(f"reflexe-simulator: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
