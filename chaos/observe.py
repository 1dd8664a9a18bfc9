"""What the checker reads after a chaos run: PostgreSQL (the services' tables), Kafka (the event
topics, read_committed and read_uncommitted), the traffic driver's journals and the indicators
API; then the figures and their one JSON line (chaos.checker).

Independent of the services: the records are decoded here from their CloudEvents headers with the
generated protobuf classes; only the topic names come from the platform's declaration.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import Message
from reflexe.v1 import capacity_pb2, matching_pb2, referral_pb2

from chaos import checker
from chaos.checker import (Accepted, CapacityStep, ClockRow, Event, LoggedDelivery, Receipt, ReferralRow,
                           Subscription)
from reflexe_common.topics import CAPACITY_EVENTS, MATCHING_EVENTS, REFERRAL_EVENTS, Topic

log = logging.getLogger("chaos.observe")
EVENT_TOPICS = (REFERRAL_EVENTS, MATCHING_EVENTS, CAPACITY_EVENTS)
MODULES = (referral_pb2, matching_pb2, capacity_pb2)


def decode(type_name: str, payload: bytes) -> Message | None:
    """The generated class named by ce_type (reflexe.v1.X), parsed; None for an unknown type."""
    name = type_name.rsplit(".", 1)[-1]
    for module in MODULES:
        cls = getattr(module, name, None)
        if cls is not None:
            message = cls()
            message.ParseFromString(payload)
            return message
    return None


def _time(stamp: Any) -> datetime | None:
    if stamp is None or (stamp.seconds == 0 and stamp.nanos == 0):
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def event_of(topic: str, partition: int, offset: int, headers: Iterable[tuple[str, bytes]], value: bytes) -> Event:
    attrs = {k: v.decode() for k, v in headers}
    message = decode(attrs.get("ce_type", ""), value)
    fields: dict[str, Any] = {}
    referral_id, occurred = "", None
    if message is not None:
        header = getattr(message, "header", None)
        if header is not None and message.HasField("header"):
            referral_id, occurred = header.referral_id, _time(header.occurred_at)
            fields["department"], fields["actor"] = header.department, header.actor
        else:
            referral_id = getattr(message, "referral_id", "")
            occurred = _time(getattr(message, "occurred_at", None) or getattr(message, "declared_at", None))
            fields["department"] = getattr(message, "department", "")
        for name in ("offer_id", "had_finess", "hold_id", "reason", "pending_evaluation", "by_desk", "place_of_care",
                     "places_available", "status", "authorised_places", "eligible"):
            if hasattr(message, name):
                fields[name] = getattr(message, name)
        for name in ("hold_until", "exited_at", "declared_at"):
            if hasattr(message, name):
                fields[name] = _time(getattr(message, name))
        if hasattr(message, "active_patients") and message.HasField("active_patients"):
            fields["active_patients"] = message.active_patients
        if isinstance(message, referral_pb2.ReferralRequested):
            request = message.request
            fields["department"] = request.department or fields["department"]
            fields.update(source_finess=request.source.finess, source_kind=request.source.kind,
                          place=request.patient.place_of_care, urgency=request.clinical.urgency,
                          planned_date=request.clinical.planned_date, ed_arrival=_time(request.ed_arrival_at),
                          requested_at=_time(request.requested_at),
                          avis=("FAVOURABLE" if request.avis.eligible else "UNFAVOURABLE") if request.HasField("avis") else None)
    return Event(topic, partition, offset, attrs.get("ce_id", ""), attrs.get("ce_type", ""), referral_id, occurred, fields)


@dataclass
class Access:
    """Where the run's Kafka and PostgreSQL are, and the super user's Kafka credentials."""

    kafka_bootstrap: str
    kafka_admin_password: str
    database_url: str
    kafka_security_protocol: str = "SASL_PLAINTEXT"

    def kafka_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap, "security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol != "PLAINTEXT":
            options.update(sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="admin",
                           sasl_plain_password=self.kafka_admin_password)
        return options


async def read_topics(access: Access, isolation: str, topics: Iterable[Topic] = EVENT_TOPICS) -> list[Event]:
    """Every record of the topics from the beginning to their end (the last stable offset under
    read_committed), decoded."""
    consumer = AIOKafkaConsumer(**access.kafka_options(), isolation_level=isolation, enable_auto_commit=False,
                                group_id=None, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    events: list[Event] = []
    try:
        partitions = [TopicPartition(t.name, p) for t in topics for p in range(t.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=2000, max_records=5000)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < ends[tp]:
                        events.append(event_of(tp.topic, tp.partition, r.offset, r.headers, r.value))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return events


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut by a kill of the driver: it was never acknowledged
                continue
    return out


async def capacity_steps(conn: asyncpg.Connection) -> list[CapacityStep]:
    """The capacity outbox in commit order: declarations and holds, each under the HAD's row lock."""
    steps = []
    for r in await conn.fetch("SELECT id, created_at, headers, payload FROM capacity.outbox ORDER BY id"):
        attrs = dict(json.loads(r["headers"]))
        kind = attrs.get("ce_type", "")
        if kind not in ("reflexe.v1.CapacityDeclared", "reflexe.v1.OfferProposed"):
            continue
        message = decode(kind, r["payload"])
        if isinstance(message, capacity_pb2.CapacityDeclared):
            steps.append(CapacityStep(r["id"], r["created_at"], kind, message.had_finess, places=message.places_available,
                                      status=message.status))
        else:
            steps.append(CapacityStep(r["id"], r["created_at"], kind, message.had_finess, hold_id=message.hold_id,
                                      hold_until=_time(message.hold_until)))
    return steps


@dataclass
class Observations:
    accepted: list[Accepted] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    committed: list[Event] = field(default_factory=list)
    uncommitted: list[Event] = field(default_factory=list)
    referrals: list[ReferralRow] = field(default_factory=list)
    clocks: list[ClockRow] = field(default_factory=list)
    steps: list[CapacityStep] = field(default_factory=list)
    hl7_recorded: set[str] = field(default_factory=set)
    logged: list[LoggedDelivery] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


async def load(access: Access, journal_dir: Path) -> Observations:
    obs = Observations()
    for item in read_journal(journal_dir / "accepted.jsonl"):
        obs.accepted.append(Accepted(item["door"], item["key"]))
    for item in read_journal(journal_dir / "webhooks.jsonl"):
        obs.receipts.append(Receipt(item["recipient"], item["webhook_id"], item["type"], item["body"]))
    obs.committed = await read_topics(access, "read_committed")
    obs.uncommitted = await read_topics(access, "read_uncommitted")
    conn = await asyncpg.connect(access.database_url)
    try:
        obs.now = await conn.fetchval("SELECT now()")
        obs.referrals = [ReferralRow(str(r["referral_id"]), r["status"])
                         for r in await conn.fetch("SELECT referral_id, status FROM referral.referrals")]
        obs.clocks = [ClockRow(str(r["referral_id"]), r["kind"], r["due_at"])
                      for r in await conn.fetch("SELECT referral_id, kind, due_at FROM referral.clocks")]
        obs.steps = await capacity_steps(conn)
        obs.hl7_recorded = {f"{r['sender_finess']}/{r['control_id']}"
                            for r in await conn.fetch("SELECT sender_finess, control_id FROM gateway.messages")}
        obs.logged = [LoggedDelivery(r["webhook_id"], r["recipient"], r["status"], str(r["subscription_id"]))
                      for r in await conn.fetch("SELECT webhook_id, recipient, status, subscription_id FROM notify.deliveries "
                                                "WHERE recipient LIKE 'had:%' OR recipient LIKE 'desk:%'")]
        obs.subscriptions = [Subscription(r["recipient"], r["created_at"]) for r in await conn.fetch(
            "SELECT recipient, min(created_at) AS created_at FROM notify.subscriptions WHERE active GROUP BY recipient")]
    finally:
        await conn.close()
    return obs


def figures(obs: Observations) -> dict[str, Any]:
    referral_events = [e for e in obs.committed if e.topic == REFERRAL_EVENTS.name]
    requested = {e.referral_id for e in referral_events if e.type == "reflexe.v1.ReferralRequested"}
    accepted_at: dict[str, datetime] = {}
    for e in referral_events:
        if e.type == "reflexe.v1.OfferAccepted" and e.fields.get("offer_id"):
            offer = e.fields["offer_id"]
            accepted_at[offer] = min(e.occurred_at, accepted_at.get(offer, e.occurred_at))
    undelivered, twice = checker.webhook_figures(obs.receipts, obs.logged,
                                                 checker.expected_notifications(referral_events, obs.subscriptions))
    details = {
        "lost": checker.lost(obs.accepted, {r.referral_id for r in obs.referrals}, requested, obs.hl7_recorded),
        "double_booked": checker.double_booked(obs.steps, checker.release_times(referral_events), accepted_at),
        "webhooks_undelivered": undelivered,
        "webhooks_delivered_twice": twice,
        "unexplained": checker.unexplained(obs.referrals, referral_events, obs.clocks, obs.now),
    }
    out: dict[str, Any] = {name: len(found) for name, found in details.items()}
    out["duplicated_records"] = checker.duplicated_records(obs.committed)
    out["duplicated_records_uncommitted"] = checker.duplicated_records(obs.uncommitted)
    out["_details"] = {name: found[:20] for name, found in details.items() if found}
    distinct = set(obs.accepted)  # a retried request answered 2xx twice is journaled twice
    out["referrals_accepted"] = sum(1 for a in distinct if a.door != "hl7")
    out["referrals_by_door"] = {door: sum(1 for a in distinct if a.door == door) for door in ("rest", "fhir", "hl7")}
    out["referrals_stored"] = len(obs.referrals)
    out["events_committed"] = len(obs.committed)
    out["webhooks_received"] = len(obs.receipts)
    return out


async def indicators_equal_oracle(obs: Observations, indicators_url: str, token: str, departments: list[str],
                                  ) -> tuple[bool, list[str]]:
    """The indicators API, department and HAD levels, day by day over the run, against the oracle
    computed from the committed event log (tests/integration/indicators/simulation.py's oracle, plain
    Python over raw events, fed here with the run's events). `stale_share` is left out: it is a
    share of time up to the instant of the query, which the API and the oracle cannot share."""
    from tests.integration.indicators import simulation  # the oracle: no service code in it

    evs = to_oracle_events(obs.committed)
    if not evs:
        return False, ["no event to compare"]
    first = min(ev.at for ev in evs).astimezone(simulation.PARIS).date()
    last = obs.now.astimezone(simulation.PARIS).date()
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=indicators_url, timeout=60) as client:
        for level in ("department", "had"):
            response = await client.get("/v1/indicators", headers={"Authorization": f"Bearer {token}"}, params={
                "level": level, "period": "day", "from": first.isoformat(), "to": last.isoformat()})
            if response.status_code != 200:
                return False, [f"indicators API {level}: HTTP {response.status_code} {response.text[:300]}"]
            now = datetime.now(UTC)
            expected = simulation.oracle(evs, level, "day", first, last, now, stale_after=timedelta(minutes=720),
                                         zones={d: simulation.PARIS for d in departments})
            problems += compare(response.json()["rows"], expected, level)
    return not problems, problems


def compare(api_rows: list[dict], expected: dict[tuple[str, str], dict], level: str) -> list[str]:
    rows = {(r["period"], r["key"]): r for r in api_rows}
    problems = []
    for key in sorted(set(rows) | set(expected)):
        if key not in rows or key not in expected:
            problems.append(f"{level} {key}: {'missing from the API' if key not in rows else 'not in the oracle'}")
            continue
        got, want = rows[key], expected[key]
        for column, value in got.items():
            if column in ("period", "key", "stale_share"):
                continue
            w = want.get(column, None if value is None else 0)
            if w is None or value is None:
                if w != value:
                    problems.append(f"{level} {key} {column}: API {value!r}, oracle {w!r}")
            elif abs(float(value) - float(w)) > 1e-6 * max(1.0, abs(float(w))):
                problems.append(f"{level} {key} {column}: API {value!r}, oracle {w!r}")
    return problems


ORACLE_KINDS = {"ReferralRequested", "EdExitRecorded", "ReferralDeclaredIneligible", "OfferMade", "OfferAccepted",
                "EvaluationConfirmed", "AcceptanceWithdrawn", "AvisGiven", "OfferDeclined", "OfferExpired",
                "OfferWithdrawn", "ReferralEscalated", "PatientAdmitted", "PatientDischarged", "ReferralCancelled",
                "CapacityDeclared"}


def to_oracle_events(events: Iterable[Event]) -> list:
    """The committed events as the oracle's plain records (the inverse of its encoding)."""
    from tests.integration.indicators.simulation import Ev

    out, seen = [], set()
    for e in events:
        kind = e.type.rsplit(".", 1)[-1]
        if kind not in ORACLE_KINDS or e.event_id in seen or e.topic == MATCHING_EVENTS.name:
            continue
        seen.add(e.event_id)
        f = e.fields
        fields: dict[str, Any] = {"had": f.get("had_finess", ""), "offer_id": f.get("offer_id", ""),
                                  "reason": f.get("reason", ""), "by_desk": f.get("by_desk", False),
                                  "pending_evaluation": f.get("pending_evaluation", False)}
        at = e.occurred_at
        if kind == "ReferralRequested":
            # The request's own time (the hospital's), from which the indicators measure their delays.
            at = f.get("requested_at") or at
            planned = f.get("planned_date")
            fields.update(source_finess=f["source_finess"], source_kind=f["source_kind"], place=f["place"],
                          ed_arrival=f.get("ed_arrival"), avis=f.get("avis"), urgency=f.get("urgency"),
                          planned_date=date.fromisoformat(planned) if planned else None)
        elif kind == "EdExitRecorded":
            fields["exited"] = f.get("exited_at")
        elif kind == "AvisGiven":
            fields.update(had=str(f.get("actor", "")).removeprefix("liaison:"),
                          avis="FAVOURABLE" if f.get("eligible") else "UNFAVOURABLE")
        elif kind == "PatientAdmitted":
            fields["place"] = f.get("place_of_care", "")
        elif kind == "CapacityDeclared":
            at = f.get("declared_at") or at
            fields.update(places=f.get("places_available", 0), status=f.get("status", ""),
                          authorised=f.get("authorised_places", 0), census=f.get("active_patients"))
        out.append(Ev(kind, at, f.get("department", ""), e.referral_id, fields, e.event_id))
    return out


async def check(access: Access, journal_dir: Path, indicators_url: str | None, indicators_token: str | None,
                departments: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    obs = await load(access, journal_dir)
    result = figures(obs)
    if indicators_url and indicators_token:
        equal, problems = await indicators_equal_oracle(obs, indicators_url, indicators_token, departments)
        if problems:
            result["_details"]["indicators"] = problems[:20]
    else:
        equal = False
    details = result.pop("_details")
    (journal_dir / "checker-details.json").write_text(json.dumps(details, indent=1, default=str), encoding="utf-8")
    ordered = {name: result.get(name) for name in ("lost", "double_booked", "duplicated_records", "webhooks_undelivered",
                                                   "webhooks_delivered_twice", "unexplained")}
    ordered["indicators_equal_oracle"] = equal
    ordered.update({k: v for k, v in result.items() if k not in ordered})
    ordered.update(extra)
    return ordered
