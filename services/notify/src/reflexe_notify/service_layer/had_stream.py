"""Each HAD's live stream: the events that concern it (offers made to it and their end, its
patients' admission, discharge, cancellation, an overdue admission, its own capacity), told to
its page without a reload.

Stored like a department's stream (store.append_desk_events, in the consumer's transaction, under
the key 'had:<FINESS>'), so the same hub follows it with Last-Event-ID resumption and the same
pruning ages it. An HAD's entry carries only what the HAD may know: its own sentence of the
matcher's explanation, never another HAD's name or answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import asyncpg

from reflexe_common.visibility import own_explanation
from reflexe_notify.adapters import store
from reflexe_notify.adapters.store import HadReferralChange, ReferralMemory
from reflexe_notify.domain.desk import DeskEvent

log = logging.getLogger(__name__)

# What ends an HAD's part in a referral, and what (re)opens it.
_ENDS = frozenset({"offer.declined", "offer.expired", "offer.withdrawn", "referral.discharged", "referral.cancelled",
                   "referral.ineligible"})
_OPENS = frozenset({"offer.proposed", "offer.accepted", "referral.admitted"})
# Told to the HADs the referral concerns (the events name no HAD).
_TO_CONCERNED = frozenset({"referral.cancelled", "admission.overdue", "referral.discharged"})
# What an HAD's entry may carry.
_KEPT = ("referral_id", "department", "offer_id", "had_finess", "hold_until", "reason", "by_desk", "explanation",
         "pending_evaluation", "live_places", "declared_places", "status", "authorised_places")


def stream_key(finess: str) -> str:
    """An HAD's stream among the departments' (a department code never has a colon)."""
    return f"had:{finess}"


def _for_had(event: DeskEvent, finess: str) -> DeskEvent:
    data = {k: v for k, v in event.data.items() if k in _KEPT}
    if "explanation" in data:
        data["explanation"] = own_explanation(data["explanation"] or "", finess)
    if event.data.get("had_finess") not in (None, "", finess):
        data.pop("had_finess", None)
    return replace(event, department=stream_key(finess), data=data)


def told(event: DeskEvent, memory: ReferralMemory, changes: dict[tuple[str, str], HadReferralChange]) -> list[DeskEvent]:
    """The entries of the HADs' streams a desk stream entry makes. The HADs' parts in the
    referral move in `memory` at once (a later event of the same batch sees them) and in
    `changes`, which the batch writes when it commits."""
    had = event.data.get("had_finess") or ""
    referral_id = event.data.get("referral_id") or ""
    if event.kind == "capacity.changed":
        return [_for_had(event, had)] if had else []
    concerned: list[str] = []
    if had and referral_id and event.kind not in ("referral.desk_offer",):
        # A desk's choice is told by the offer it makes (OfferMade), with its hold.
        concerned = [had]
    elif referral_id and event.kind in _TO_CONCERNED:
        concerned = list(memory.concerned.get(referral_id, ()))
    for finess in concerned:
        key = (finess, referral_id)
        earlier = changes.get(key)
        if event.kind in _OPENS or event.kind in _ENDS:
            opens = event.kind in _OPENS
            # The first write of the row names its department; later ones leave it.
            department = earlier.department if earlier and earlier.opened_or_ended else \
                event.data.get("department") or event.department
            changes[key] = HadReferralChange(finess, referral_id, department, opens, event.kind, True)
            hads = memory.concerned.setdefault(referral_id, [])
            if opens and finess not in hads:
                hads.append(finess)
                hads.sort()
            elif not opens and finess in hads:
                hads.remove(finess)
        elif earlier is not None:
            changes[key] = replace(earlier, last_event=event.kind)
        else:
            changes[key] = HadReferralChange(finess, referral_id, "", False, event.kind, False)
    return [_for_had(event, finess) for finess in concerned]


async def concerned_hads(conn: asyncpg.Connection, referral_id: str) -> list[str]:
    """The HADs still part of this referral: its offer open to them, or their acceptance standing."""
    rows = await conn.fetch("SELECT had_finess FROM had_referrals WHERE referral_id = $1 AND concerned "
                            "ORDER BY had_finess", referral_id)
    return [r["had_finess"] for r in rows]


async def concerned_referrals(pool: asyncpg.Pool, finess: str, limit: int = 50) -> list[str]:
    """The referrals this HAD is still part of (an offer pending, a patient accepted or in care), newest first."""
    rows = await pool.fetch("SELECT referral_id FROM had_referrals WHERE had_finess = $1 AND concerned "
                            "ORDER BY updated_at DESC LIMIT $2", finess, limit)
    return [r["referral_id"] for r in rows]


async def history(pool: asyncpg.Pool, finess: str, limit: int = 30) -> list[dict]:
    """The HAD's latest stream entries, newest first (its offers and their outcomes)."""
    rows = await pool.fetch("SELECT payload FROM desk_events WHERE department = $1 AND type <> 'capacity.changed' "
                            "ORDER BY seq DESC LIMIT $2", stream_key(finess), limit)
    return [json.loads(r["payload"]) for r in rows]


async def prune_periodically(pool: asyncpg.Pool, keep_days: float, every_seconds: float = 3600) -> None:
    """Referrals an HAD has not heard of for the stream's retention are forgotten with its entries."""
    while True:
        try:
            await pool.execute("DELETE FROM had_referrals WHERE updated_at < now() - make_interval(secs => $1)",
                               keep_days * 86400)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pruning the HADs' referrals failed")
        await asyncio.sleep(every_seconds)
