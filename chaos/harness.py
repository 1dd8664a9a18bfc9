"""The chaos run: the platform as in production (three Kafka brokers, two processes of each
service behind a balancer, Keycloak, PostgreSQL), the simulator's traffic through its public doors,
a nemesis, then quiet and the independent checker (docs/chaos.md).

    python -m chaos [--referrals N] [--seconds S] [--broken VARIANT] [--port-offset O]

Everything it starts lives in its own run directory and ports (shifted by --port-offset), and is
stopped and deleted at the end (--keep keeps the directory: logs, journals, checker details).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from chaos import checker
from chaos.balancer import Balancer
from chaos.broken import VARIANTS
from chaos.observe import Access, check
from tests.support.services import ServiceProcess

log = logging.getLogger("chaos")
REPO_ROOT = Path(__file__).resolve().parents[1]
INFRA_SH = REPO_ROOT / "deploy" / "local" / "infra.sh"
KEYCLOAK_SH = REPO_ROOT / "deploy" / "local" / "keycloak.sh"
# name -> (module, port variable, default port): the platform's services, two processes each.
SERVICES = {"referral": ("reflexe_referral", "REFERRAL_HTTP_PORT", 8001),
            "capacity": ("reflexe_capacity", "CAPACITY_HTTP_PORT", 8002),
            "indicators": ("reflexe_indicators", "INDICATORS_HTTP_PORT", 8003),
            "notify": ("reflexe_notify", "NOTIFY_HTTP_PORT", 8004),
            "gateway": ("reflexe_gateway", "GATEWAY_HTTP_PORT", 8005)}
REPLICAS = 2
DEPARTMENTS = ["34", "31"]
# A consumer that stops heartbeating leaves its group after this long (faust's default is 60 s):
# the matcher's pause lasts twice as long, so its partitions go to the other process meanwhile.
SESSION_TIMEOUT_S = 8
PAUSE_S = 2 * SESSION_TIMEOUT_S + 4
KILL_EVERY_S = 10
HOLD_S = 30


def parse_exports(out: str) -> dict[str, str]:
    return dict(m.groups() for m in re.finditer(r"^export ([A-Z0-9_]+)=(.*)$", out, re.MULTILINE))


@dataclass
class Ports:
    offset: int

    def __getattr__(self, name: str) -> int:
        base = {"kafka": 19092, "kafka_controller": 19093, "pg": 15432, "keycloak": 18080, "keycloak_management": 19000,
                "webhook": 8090, "mllp": 2575}[name]
        return base + self.offset

    def service(self, name: str) -> int:
        return SERVICES[name][2] + self.offset

    def instance(self, name: str, replica: int) -> int:
        """Each process's own port: 9100+ (service index * 10) + replica, shifted."""
        return 9100 + list(SERVICES).index(name) * 10 + replica + self.offset

    def instance_mllp(self, replica: int) -> int:
        return 9160 + replica + self.offset


class Process(ServiceProcess):
    """One process of a service in the run (the suite's ServiceProcess, on a port of its own and in a
    session of its own), started again on the same port after each kill."""

    def __init__(self, name: str, replica: int, port: int, env: dict[str, str], log_dir: Path, command: list[str]) -> None:
        module, port_variable, _ = SERVICES[name]
        super().__init__(module, env, port_variable, log_dir, port=port, command=command, label=f"{name}-{replica}",
                         own_session=True)
        self.name, self.replica = name, replica

    async def wait_ready(self, timeout: float = 180) -> None:
        await super().wait_ready(timeout)


@dataclass
class Faults:
    process_kills: int = 0
    broker_kills: int = 0
    postgres_restarts: int = 0
    matcher_pauses: int = 0
    log: list[str] = field(default_factory=list)

    def total(self) -> int:
        return self.process_kills + self.broker_kills + self.postgres_restarts + self.matcher_pauses

    def note(self, what: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")
        log.info("nemesis: %s", what)


async def records_between(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> int:
    """Records a read_committed consumer would still get between a group's committed offset and the
    end: a committed offset stops short of a transaction's commit marker, which is no record."""
    consumer.assign([tp])
    consumer.seek(tp, start)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        batch = await consumer.getmany(tp, timeout_ms=1000)
        found = sum(1 for r in batch.get(tp, []) if r.offset < end)
        if found:
            return found
        if await consumer.position(tp) >= end:
            return 0
    return 1  # not read through in time: taken as not caught up


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ports = Ports(args.port_offset)
        self.run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="reflexe-chaos-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)  # as root, PostgreSQL's own user must reach its state dir
        self.log_dir = self.run_dir / "logs"
        self.journal_dir = self.run_dir / "journal"
        self.state_dir = self.run_dir / "infra"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.infra_started = self.keycloak_started = False
        self.processes: list[Process] = []
        self.balancers: list[Balancer] = []
        self.driver: subprocess.Popen | None = None
        self.exports: dict[str, str] = {}
        self.faults = Faults()
        self.paused: Process | None = None
        self.rng = random.Random(args.seed)

    # ---- infrastructure ----------------------------------------------------------------------

    def script_env(self) -> dict[str, str]:
        return {**os.environ, "REFLEXE_STATE_DIR": str(self.state_dir), "KAFKA_PORT": str(self.ports.kafka),
                "KAFKA_CONTROLLER_PORT": str(self.ports.kafka_controller), "PG_PORT": str(self.ports.pg),
                "KEYCLOAK_PORT": str(self.ports.keycloak), "KEYCLOAK_MANAGEMENT_PORT": str(self.ports.keycloak_management),
                "REFLEXE_PYTHON": sys.executable}

    async def script(self, script: Path, *command: str, timeout: float = 900, **extra: str) -> str:
        proc = await asyncio.create_subprocess_exec("bash", str(script), *command, env={**self.script_env(), **extra},
                                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{script.name} {' '.join(command)} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
        return out.decode()

    async def start_infrastructure(self) -> None:
        log.info("starting three Kafka brokers and PostgreSQL (%s)", self.state_dir)
        self.infra_started = True
        # PostgreSQL durable as in production: the nemesis crashes it, and an acknowledged commit must survive.
        self.exports.update(parse_exports(await self.script(INFRA_SH, "start", REFLEXE_KAFKA_NODES="3",
                                                            REFLEXE_PG_DURABLE="1")))
        if self.args.oidc_issuer:  # a running Keycloak with the platform's realm (the test suite's)
            self.exports.update(OIDC_ISSUER=self.args.oidc_issuer,
                                KEYCLOAK_ADMIN_USER=os.environ.get("KEYCLOAK_ADMIN_USER", "admin"),
                                KEYCLOAK_ADMIN_PASSWORD=os.environ.get("KEYCLOAK_ADMIN_PASSWORD", "admin"))
            return
        log.info("starting Keycloak")
        self.keycloak_started = True
        self.exports.update(parse_exports(await self.script(KEYCLOAK_SH, "start", timeout=1800)))

    def service_env(self) -> dict[str, str]:
        speed = self.args.speed
        env = {**os.environ, **self.exports, "LOG_LEVEL": "WARNING",
               # The simulated day runs `speed` times faster than real time: the clocks follow (as `reflexe up`),
               # but a hold lasts at least HOLD_S, so that the HADs (who answer against each offer's real
               # hold) can answer in time on a loaded machine, and planned holds twice that.
               "CAPACITY_HOLD_MINUTES_WITHIN_24H": str(max(30 / speed, HOLD_S / 60)),
               "CAPACITY_HOLD_MINUTES_PLANNED": str(max(240 / speed, 2 * HOLD_S / 60)),
               "CAPACITY_STALE_AFTER_MINUTES": str(720 / speed),
               "REFERRAL_OFFER_UNANSWERED_MINUTES": str(max(15 / speed, HOLD_S / 120)),
               "NOTIFY_SECRET_KEYS": self.exports["NOTIFY_SECRET_KEYS"], "NOTIFY_ALLOW_INSECURE_WEBHOOKS": "true",
               "NOTIFY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
               "NOTIFY_REFERRAL_URL": f"http://127.0.0.1:{self.ports.service('referral')}",
               "NOTIFY_CAPACITY_URL": f"http://127.0.0.1:{self.ports.service('capacity')}",
               "GATEWAY_REFERRAL_URL": f"http://127.0.0.1:{self.ports.service('referral')}",
               "GATEWAY_PSEUDONYM_KEY": self.exports["GATEWAY_PSEUDONYM_KEY"],
               "GATEWAY_CLIENT_SECRET": os.environ.get("GATEWAY_CLIENT_SECRET", "local-reflexe-gateway"),
               "GATEWAY_SENDERS": self.exports["GATEWAY_SENDERS"],
               # A consumer group member that stops heartbeating is replaced within seconds.
               "BROKER_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S), "BROKER_HEARTBEAT_INTERVAL": "1",
               "BROKER_REBALANCE_TIMEOUT": "30"}
        return env

    def make_processes(self) -> None:
        env = self.service_env()
        for name, (module, port_variable, _) in SERVICES.items():
            for replica in (1, 2):
                port = self.ports.instance(name, replica)
                own = {**env, port_variable: str(port), "INSTANCE": f"{name}-{replica}"}
                if name == "gateway":
                    own["GATEWAY_MLLP_PORT"] = str(self.ports.instance_mllp(replica))
                command = [sys.executable, "-m", module]
                if self.args.broken and VARIANTS[self.args.broken].service == name:
                    command = [sys.executable, "-m", "chaos.broken", self.args.broken, module]
                self.processes.append(Process(name, replica, port, own, self.log_dir, command))

    async def start_platform(self) -> None:
        self.exports["NOTIFY_SECRET_KEYS"] = subprocess.run(
            [sys.executable, "-c", "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"],
            capture_output=True, text=True, check=True).stdout.strip()
        self.exports["GATEWAY_PSEUDONYM_KEY"] = secrets.token_hex(32)
        self.exports["GATEWAY_SENDERS"] = subprocess.run(
            [sys.executable, "-m", "reflexe_simulator", "--departments", ",".join(DEPARTMENTS), "--print-gateway-senders",
             "--gateway-networks", "127.0.0.1/32"], capture_output=True, text=True, check=True, cwd=REPO_ROOT,
            # With the key they share with the gateway, the hospitals that send ADT are listed too.
            env={**os.environ, "GATEWAY_PSEUDONYM_KEY": self.exports["GATEWAY_PSEUDONYM_KEY"]}).stdout.strip()
        self.make_processes()
        # One process of each first (each migrates its schema and creates the topics), then the others.
        for replica in (1, 2):
            group = [p for p in self.processes if p.replica == replica]
            for p in group:
                p.start()
            await asyncio.gather(*(p.wait_ready() for p in group))
        for name in SERVICES:
            backends = [p.port for p in self.processes if p.name == name]
            self.balancers.append(Balancer(name, self.ports.service(name), backends))
        self.balancers.append(Balancer("mllp", self.ports.mllp, [self.ports.instance_mllp(r) for r in (1, 2)]))
        for b in self.balancers:
            await b.start()
        log.info("platform up: %d processes behind balancers on %s", len(self.processes),
                 ", ".join(f"{b.name} {b.port}" for b in self.balancers))

    def start_driver(self) -> None:
        base = "http://127.0.0.1:{}"
        command = [sys.executable, "-m", "chaos.driver", "--referrals", str(self.args.referrals),
                   "--seconds", str(self.args.seconds), "--speed", str(self.args.speed),
                   "--departments", ",".join(DEPARTMENTS), "--journal-dir", str(self.journal_dir),
                   "--webhook-port", str(self.ports.webhook), "--referral-url", base.format(self.ports.service("referral")),
                   "--capacity-url", base.format(self.ports.service("capacity")),
                   "--notify-url", base.format(self.ports.service("notify")), "--mllp-port", str(self.ports.mllp),
                   "--settle-seconds", str(self.args.settle_seconds),
                   "--max-seconds", str(self.args.max_traffic_seconds or 3 * self.args.seconds)]
        out = open(self.log_dir / "driver.log", "ab")
        self.driver = subprocess.Popen(command, env={**os.environ, **self.exports}, stdout=out, stderr=subprocess.STDOUT,
                                       cwd=REPO_ROOT, start_new_session=True)

    # ---- the nemesis -------------------------------------------------------------------------

    def quiet(self) -> bool:
        return (self.journal_dir / "quiet").exists()

    async def nemesis(self) -> None:
        """A random service process SIGKILLed every 10 s (started again at once); once each: a broker
        killed with SIGKILL and started again, a PostgreSQL crash and restart, a matcher paused
        longer than its session timeout. The one-off faults are spread over the planned traffic."""
        seconds = self.args.seconds
        plan = [(0.15 * seconds, self.kill_broker), (0.40 * seconds, self.restart_postgres),
                (0.60 * seconds, self.pause_matcher)]
        while not (self.journal_dir / "started").exists():  # the HADs registered, the webhooks subscribed
            if self.driver is not None and self.driver.poll() is not None:
                raise RuntimeError(f"the traffic driver exited ({self.driver.returncode}): {self.log_dir / 'driver.log'}")
            await asyncio.sleep(0.5)
        started = time.monotonic()
        next_kill = started + KILL_EVERY_S
        broken = VARIANTS[self.args.broken].service if self.args.broken else None
        one_offs: list[asyncio.Task] = []  # run beside the kills: a broker takes a while to come back
        try:
            while plan or not self.quiet() or not all(t.done() for t in one_offs):
                if self.driver is not None and self.driver.poll() is not None:
                    raise RuntimeError(f"the traffic driver exited ({self.driver.returncode}): {self.log_dir / 'driver.log'}")
                for task in one_offs:
                    if task.done() and task.exception() is not None:
                        raise task.exception()
                now = time.monotonic()
                if plan and now - started >= plan[0][0]:
                    one_offs.append(asyncio.create_task(plan.pop(0)[1]()))
                if now >= next_kill and not self.quiet():
                    # A broken variant is shown where it is broken: its service's processes are the targets.
                    targets = [p for p in self.processes if p.alive() and (broken is None or p.name == broken)
                               and p is not self.paused]
                    if not targets:  # every target down at once (one failed its start): the next round
                        next_kill = now + KILL_EVERY_S
                        continue
                    victim = self.rng.choice(targets)
                    victim.kill()
                    self.faults.process_kills += 1
                    self.faults.note(f"SIGKILL {victim.label}")
                    victim.start()
                    next_kill = now + KILL_EVERY_S
                await asyncio.sleep(0.5)
        finally:
            for task in one_offs:
                task.cancel()
            await asyncio.gather(*one_offs, return_exceptions=True)

    async def kill_broker(self) -> None:
        node = self.rng.randint(1, 3)
        await self.script(INFRA_SH, "kafka-kill", str(node))
        self.faults.broker_kills += 1
        self.faults.note(f"kill -9 Kafka node {node}")
        await asyncio.sleep(KILL_EVERY_S * 2)  # a while without it: leaders move, in-sync replica sets shrink
        await self.script(INFRA_SH, "kafka-start", str(node), timeout=300)
        self.faults.note(f"Kafka node {node} back")

    async def restart_postgres(self) -> None:
        await self.script(INFRA_SH, "pg-restart", timeout=300, REFLEXE_PG_DURABLE="1")
        self.faults.postgres_restarts += 1
        self.faults.note("PostgreSQL crashed and restarted")

    async def pause_matcher(self) -> None:
        victim = self.rng.choice([p for p in self.processes if p.name == "capacity" and p.alive()])
        self.paused = victim  # not killed meanwhile: the pause is the fault
        victim.signal(signal.SIGSTOP)
        self.faults.matcher_pauses += 1
        self.faults.note(f"SIGSTOP {victim.label} for {PAUSE_S} s (session timeout {SESSION_TIMEOUT_S} s)")
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            victim.signal(signal.SIGCONT)
            self.paused = None
        self.faults.note(f"SIGCONT {victim.label}")

    # ---- quiet -------------------------------------------------------------------------------

    async def quiesce(self, timeout: float) -> dict[str, Any]:
        """Traffic stopped; wait until every process serves, the outboxes are drained, every
        consumer group caught up with its topics, the clocks due have fired and notify and the
        gateway have nothing pending: twice in a row, a few seconds apart."""
        deadline = time.monotonic() + timeout
        access = self.access()
        steady, last = 0, {}
        while time.monotonic() < deadline:
            for p in self.processes:
                if not p.alive():
                    self.faults.note(f"{p.label} found dead while quiescing: started again")
                    p.start()
            last = await self.backlog(access)
            steady = steady + 1 if not any(last.values()) else 0
            if steady >= 2:
                return last
            await asyncio.sleep(3)
        log.warning("not quiet after %.0f s: %s", timeout, last)
        return last

    async def backlog(self, access: Access) -> dict[str, Any]:
        ready = await asyncio.gather(*(p.ready() for p in self.processes))
        out: dict[str, Any] = {"not_ready": [p.label for p, ok in zip(self.processes, ready) if not ok]}
        try:
            conn = await asyncpg.connect(access.database_url)
        except (OSError, asyncpg.PostgresError) as exc:
            return {**out, "postgres": str(exc)}
        try:
            out["outbox"] = await conn.fetchval(
                "SELECT (SELECT count(*) FROM referral.outbox WHERE published_at IS NULL)"
                " + (SELECT count(*) FROM capacity.outbox WHERE published_at IS NULL)")
            out["clocks_due"] = await conn.fetchval("SELECT count(*) FROM referral.clocks WHERE due_at < now() - interval '2 s'")
            out["clocks_soon"] = await conn.fetchval(
                "SELECT count(*) FROM referral.clocks WHERE kind <> 'ADMISSION_OVERDUE' AND due_at < now() + interval '5 min'")
            out["webhooks_pending"] = await conn.fetchval("SELECT count(*) FROM notify.deliveries WHERE status = 'PENDING'")
            # A message waiting for its next attempt (its referral not known yet) is not a backlog.
            out["hl7_pending"] = await conn.fetchval("SELECT count(*) FROM gateway.messages WHERE status = 'PENDING' "
                                                     "AND next_attempt_at < now() - interval '10 s'")
        finally:
            await conn.close()
        out["consumer_lag"] = await self.consumer_lag(access)
        return out

    async def consumer_lag(self, access: Access) -> int:
        admin = AIOKafkaAdminClient(**access.kafka_options())
        await admin.start()
        consumer = AIOKafkaConsumer(**access.kafka_options(), enable_auto_commit=False, isolation_level="read_committed")
        await consumer.start()
        try:
            lag = 0
            for group, _ in await admin.list_consumer_groups():
                offsets = await admin.list_consumer_group_offsets(group)
                committed = {tp: meta.offset for tp, meta in offsets.items() if tp.topic.startswith("reflexe.") and meta.offset >= 0}
                if not committed:
                    continue
                ends = await consumer.end_offsets(list(committed))
                for tp, offset in committed.items():
                    if ends[tp] > offset:
                        lag += await records_between(consumer, tp, offset, ends[tp])
            return lag
        except Exception as exc:  # a coordinator moving: not caught up yet
            log.info("consumer lag unknown: %s", exc)
            return 1
        finally:
            await consumer.stop()
            await admin.close()

    def access(self) -> Access:
        return Access(self.exports["KAFKA_BOOTSTRAP"], self.exports["REFLEXE_KAFKA_ADMIN_PASSWORD"],
                      self.exports["DATABASE_URL"], self.exports.get("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"))

    async def ars_token(self) -> str:
        from reflexe_common.local_idp import LocalIdentityProvider

        idp = LocalIdentityProvider.from_env(self.exports)
        try:
            token, _ = await idp.issue("ars", region="76")  # Occitanie: departments 34 and 31
            return token
        finally:
            await idp.aclose()

    # ---- the run -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        await self.start_infrastructure()
        await self.start_platform()
        self.start_driver()
        await self.nemesis()
        traffic = json.loads((self.journal_dir / "quiet").read_text())
        log.info("traffic stopped: %s", traffic)
        # Every process back and serving before the quiet is measured.
        for p in self.processes:
            if not p.alive():
                p.start()
        quiet = await self.quiesce(self.args.quiet_timeout)
        log.info("quiet: %s", quiet)
        figures = await check(self.access(), self.journal_dir, f"http://127.0.0.1:{self.ports.service('indicators')}",
                              await self.ars_token(), DEPARTMENTS, {})
        figures.update({
            "referrals": figures.pop("referrals_accepted"),
            "faults": self.faults.total(),
            "faults_by_kind": {"process_kills": self.faults.process_kills, "broker_kills": self.faults.broker_kills,
                               "postgres_restarts": self.faults.postgres_restarts, "matcher_pauses": self.faults.matcher_pauses},
            "traffic_seconds": traffic.get("seconds"),
            "duration_seconds": round(time.monotonic() - started, 1),
            "broken": self.args.broken,
            "quiet": not any(quiet.values()),
        })
        if not figures["quiet"]:  # what was still pending when the wait for quiet gave up
            figures["not_quiet"] = {name: value for name, value in quiet.items() if value}
        (self.run_dir / "faults.log").write_text("\n".join(self.faults.log) + "\n")
        return figures

    async def stop(self) -> None:
        if self.driver is not None and self.driver.poll() is None:
            self.driver.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.driver.wait(20)
            if self.driver.poll() is None:
                self.driver.kill()
        for b in self.balancers:
            await b.stop()
        for p in self.processes:
            p.stop(20)
        if self.keycloak_started:
            with contextlib.suppress(Exception):
                await self.script(KEYCLOAK_SH, "clean", timeout=180)
        if self.infra_started:
            with contextlib.suppress(Exception):
                await self.script(INFRA_SH, "clean", timeout=300)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reflexe chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--referrals", type=int, default=10_000, help="accepted referrals to drive (default 10,000)")
    p.add_argument("--seconds", type=float, default=2700.0, help="how long the traffic should last (default 2700)")
    p.add_argument("--broken", choices=sorted(VARIANTS), default=None,
                   help="run a deliberately broken variant, which the checker must catch")
    p.add_argument("--max-traffic-seconds", type=float, default=0.0,
                   help="post no new referral after this long, however many were accepted (default 3 x --seconds)")
    p.add_argument("--settle-seconds", type=float, default=60.0,
                   help="after the last referral, how long the HADs and desks go on answering (default 60)")
    p.add_argument("--speed", type=float, default=240.0, help="simulated seconds per real second (default 240)")
    p.add_argument("--port-offset", type=int, default=int(os.environ.get("REFLEXE_PORT_OFFSET", "700")),
                   help="added to every port (default 700, or REFLEXE_PORT_OFFSET)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--oidc-issuer", default=None,
                   help="use this running Keycloak's realm (admin: KEYCLOAK_ADMIN_USER/PASSWORD) instead of starting one")
    p.add_argument("--quiet-timeout", type=float, default=600.0, help="at most this long to wait for quiet (default 600)")
    p.add_argument("--run-dir", default=None, help="where logs, journals and state go (default: a new temporary dir)")
    p.add_argument("--keep", action="store_true", help="keep the run dir (it is printed)")
    return p


async def main_async(args: argparse.Namespace) -> int:
    harness = Harness(args)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        figures = await harness.run()
    finally:
        await harness.stop()
        if args.keep:
            log.info("run dir kept: %s", harness.run_dir)
    print(checker.summary(figures), flush=True)
    bad = checker.failed(figures)
    if bad:
        log.error("the checker failed on %s (details: %s)", ", ".join(bad), harness.run_dir / "journal" / "checker-details.json")
    if not args.keep and not bad:
        shutil.rmtree(harness.run_dir, ignore_errors=True)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-5s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(main_async(args))
