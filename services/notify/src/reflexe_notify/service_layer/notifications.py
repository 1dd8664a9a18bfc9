"""From an event to deliveries waiting in PostgreSQL: nothing is sent here, so a notification
is never lost to a crash (it is stored before the Kafka offset is committed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
from reflexe.v1 import referral_pb2

from reflexe_common.envelope import Envelope
from reflexe_common.visibility import own_explanation
from reflexe_notify.adapters import store
from reflexe_notify.adapters.events import desk_event_from, notice_from, other_desks_named
from reflexe_notify.adapters.store import Claimed
from reflexe_notify.domain.desk import DeskEvent, desks_told
from reflexe_notify.domain.email import page_url
from reflexe_notify.domain.notices import Notice
from reflexe_notify.domain.recipients import Recipient
from reflexe_notify.domain.routing import EventKind, HadAudience, had_audience, recipients_for
from reflexe_notify.service_layer import had_stream


def event_handler(attempt_limit: int, public_url: str | None = None):
    """The idempotent consumer's handler for one event: a batch of one."""
    record = batch_handler(attempt_limit, public_url)

    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        await record(conn, [envelope])

    return handle


def batch_handler(attempt_limit: int, public_url: str | None = None):
    """The command of the event consumer: a batch of new events (in each partition's order) routed
    in memory and recorded in the caller's transaction with a few statements whatever its size.
    Returns the stream entries committed with it, for the live readers. With `public_url`, an
    HAD's offer carries `page_url`, its page to answer from."""

    async def record(conn: asyncpg.Connection, envelopes: Sequence[Envelope]) -> list[store.StreamEntry]:
        routed = [(e, notice_from(e), desk_event_from(e)) for e in envelopes]
        memory = await store.referral_memory(conn, _referrals_named(routed))
        new_referrals: list[tuple[str, str, str]] = []
        new_widenings: dict[str, list[str]] = {}  # widened in this batch: after the stored ones, by department
        changes: dict[tuple[str, str], store.HadReferralChange] = {}
        entries: list[DeskEvent] = []
        planned: list[store.Planned] = []
        for envelope, notice, desk_event in routed:
            message = envelope.message
            if isinstance(message, referral_pb2.ReferralRequested):
                h = message.header
                if h.referral_id not in memory.sources:
                    memory.sources[h.referral_id] = message.request.source.finess
                    new_referrals.append((h.referral_id, h.department, message.request.source.finess))
            # The HADs a referral concerns are read before its stream entry below ends their part in it.
            concerned = list(memory.concerned.get(notice.referral_id, ())) \
                if notice and notice.referral_id and had_audience(notice.kind) is HadAudience.CONCERNED else []
            if desk_event is not None:  # the desks' live streams, committed with the inbox record
                neighbours = _neighbours(envelope, desk_event, memory, new_widenings)
                entries += [replace(desk_event, department=d) for d in desks_told(desk_event.department, neighbours)]
                entries += had_stream.told(desk_event, memory, changes)  # and the stream of each HAD it concerns
            if notice is not None:
                planned += _deliveries(envelope.id, notice, memory, concerned, public_url)
        await store.record_referral_memory(
            conn, new_referrals, [(r, d) for r, added in new_widenings.items() for d in added], list(changes.values()))
        told = await store.append_desk_events(conn, entries)
        await store.enqueue_all(conn, planned, attempt_limit)
        return told

    return record


def _referrals_named(routed: Sequence[tuple[Envelope, Notice | None, DeskEvent | None]]) -> list[str]:
    named = {n.referral_id for _, n, _ in routed if n is not None and n.referral_id}
    named |= {d.data["referral_id"] for _, _, d in routed if d is not None and d.data.get("referral_id")}
    return sorted(named)


def _deliveries(origin: str, notice: Notice, memory: store.ReferralMemory, concerned: list[str],
                public_url: str | None) -> list[store.Planned]:
    source = memory.sources.get(notice.referral_id) if notice.referral_id else None
    recipients = recipients_for(notice.kind, notice.department, notice.had_finess, source, concerned)
    planned = []
    if notice.kind == EventKind.OFFER_PROPOSED and notice.had_finess:
        # The HAD hears only its own part of the matcher's explanation (docs/security.md).
        had = Recipient.had(notice.had_finess)
        own = replace(notice, data={**notice.data, "explanation": own_explanation(
            notice.data.get("explanation") or "", notice.had_finess)})
        link = page_url(public_url, str(had), notice.department)
        if link:
            own = replace(own, data={**own.data, "page_url": link})
        planned.append(store.Planned(origin, notice.kind, notice.department, own.body(), [had]))
        recipients = [r for r in recipients if r != had]
    planned.append(store.Planned(origin, notice.kind, notice.department, notice.body(), recipients))
    return planned


def _neighbours(envelope: Envelope, desk_event: DeskEvent, memory: store.ReferralMemory,
                new_widenings: dict[str, list[str]]) -> list[str]:
    """The other desks that follow this event: those it names itself (a multi-department HAD's,
    a widening's), and for a referral's later events the departments it was widened to."""
    named = list(other_desks_named(envelope))
    referral_id = desk_event.data.get("referral_id")
    if isinstance(envelope.message, referral_pb2.SearchWidened):
        stored = memory.widenings.setdefault(referral_id, [])
        added = new_widenings.setdefault(referral_id, [])
        # Stored in this transaction, they share its time: read back after the older ones, by department.
        fresh = [d for d in dict.fromkeys(named) if d not in stored and d not in added]
        added += fresh
        added.sort()
        return named
    if referral_id:
        return named + memory.widenings.get(referral_id, []) + new_widenings.get(referral_id, [])
    return named


async def tell_desk_of_failure(conn: asyncpg.Connection, failed: Claimed, attempt_limit: int) -> None:
    """A delivery given up on: its department's desk hears of it (but not of its own failures,
    which would otherwise chain without end)."""
    if failed.event_type == EventKind.DELIVERY_FAILED or not failed.department:
        return
    notice = Notice(EventKind.DELIVERY_FAILED, failed.department, datetime.now(UTC), {
        "recipient": failed.recipient, "webhook_id": failed.webhook_id, "event_type": failed.event_type,
        "attempts": failed.attempts,
    })
    # The attempt count is part of the origin: a re-queued delivery failing again is told again.
    origin = f"{failed.webhook_id}/failed/{failed.attempts}"
    await store.enqueue(conn, origin, notice.kind, notice.department, notice.body(), [Recipient.desk(failed.department)],
                        attempt_limit)
    await store.append_desk_events(conn, [DeskEvent(notice.department, origin, str(notice.kind), notice.occurred_at,
                                                    notice.data)])
