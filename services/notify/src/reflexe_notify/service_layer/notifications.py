"""From an event to deliveries waiting in PostgreSQL: nothing is sent here, so a notification
is never lost to a crash (it is stored before the Kafka offset is committed)."""

from __future__ import annotations

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
    """The idempotent consumer's handler: runs in the transaction that records the event id.
    With `public_url`, an HAD's offer carries `page_url`, its page to answer from."""

    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        message = envelope.message
        if isinstance(message, referral_pb2.ReferralRequested):
            await store.remember_referral(conn, message.header.referral_id, message.header.department,
                                          message.request.source.finess)
        notice = notice_from(envelope)
        # The HADs a referral concerns are read before its stream entry below ends their part in it.
        concerned = await had_stream.concerned_hads(conn, notice.referral_id) \
            if notice and notice.referral_id and had_audience(notice.kind) is HadAudience.CONCERNED else []
        desk_event = desk_event_from(envelope)
        if desk_event is not None:  # the desks' live streams, committed with the inbox record
            for department in desks_told(desk_event.department, await _neighbours(conn, envelope, desk_event)):
                await store.append_desk_event(conn, replace(desk_event, department=department))
            await had_stream.record(conn, desk_event)  # and the stream of each HAD it concerns
        if notice is None:
            return
        source = await store.source_finess(conn, notice.referral_id) if notice.referral_id else None
        recipients = recipients_for(notice.kind, notice.department, notice.had_finess, source, concerned)
        if notice.kind == EventKind.OFFER_PROPOSED and notice.had_finess:
            # The HAD hears only its own part of the matcher's explanation (docs/security.md).
            had = Recipient.had(notice.had_finess)
            own = replace(notice, data={**notice.data, "explanation": own_explanation(
                notice.data.get("explanation") or "", notice.had_finess)})
            link = page_url(public_url, str(had), notice.department)
            if link:
                own = replace(own, data={**own.data, "page_url": link})
            await store.enqueue(conn, envelope.id, notice.kind, notice.department, own.body(), [had], attempt_limit)
            recipients = [r for r in recipients if r != had]
        await store.enqueue(conn, envelope.id, notice.kind, notice.department, notice.body(), recipients, attempt_limit)

    return handle


async def _neighbours(conn: asyncpg.Connection, envelope: Envelope, desk_event: DeskEvent) -> list[str]:
    """The other desks that follow this event: those it names itself (a multi-department HAD's,
    a widening's), and for a referral's later events the departments it was widened to."""
    named = list(other_desks_named(envelope))
    referral_id = desk_event.data.get("referral_id")
    if isinstance(envelope.message, referral_pb2.SearchWidened):
        await store.remember_widening(conn, referral_id, named)
        return named
    if referral_id:
        return named + await store.widened_to(conn, referral_id)
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
    await store.append_desk_event(conn, DeskEvent(notice.department, origin, str(notice.kind), notice.occurred_at,
                                                  notice.data))
