"""Patient movements reported by the HL7 gateway (hospital and HAD information systems), applied
with the same domain decisions as the REST commands: a hospitalisation or a death cancels the
referral, an HAD's admission and discharge are the HAD's own reports.

An ED exit (a hospital's A03) is recorded on the referral as EdExitRecorded with the hospital's
exit time, once; a repeated one is MATCHED with no new event.

The gateway names the patient by pseudonym (and an HAD may name the referral id); the referral is
the open one of that patient from that sender. Each report is recorded by its message key in the
same transaction as its effect, so a retried report is answered with the first outcome.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from reflexe_common.vocabulary import Reason
from reflexe_referral.adapters.store import ReferralStore
from reflexe_referral.domain.errors import IllegalTransition
from reflexe_referral.domain.model import Referral, Status

HOSPITAL_EFFECTS = ("ED_EXIT", "HOSPITALISED", "DECEASED")
HAD_EFFECTS = ("HAD_ADMITTED", "HAD_DISCHARGED")


@dataclass(frozen=True)
class PatientEvent:
    message_key: str  # the gateway's "<sender FINESS>/<MSH-10>"
    sender_finess: str
    effect: str  # one of HOSPITAL_EFFECTS + HAD_EFFECTS
    pseudonym: str
    referral_id: str | None
    occurred_at: datetime


def _concerns(referral: Referral, event: PatientEvent) -> bool:
    if event.effect in HOSPITAL_EFFECTS:
        return referral.request.source.finess == event.sender_finess
    return event.sender_finess in (referral.accepted_had, referral.admitted_had)


def _decide(referral: Referral, event: PatientEvent, now: datetime) -> list:
    actor = f"{'hospital' if event.effect in HOSPITAL_EFFECTS else 'had'}:{event.sender_finess}"
    match event.effect:
        case "HOSPITALISED":
            return referral.cancel(Reason.PATIENT_HOSPITALISED, "", now, actor=actor)
        case "DECEASED":
            return referral.cancel(Reason.PATIENT_DECEASED, "", now, actor=actor)
        case "HAD_ADMITTED":
            return referral.admit(event.sender_finess, now)
        case "HAD_DISCHARGED":
            return referral.discharge(event.sender_finess, now)
        case "ED_EXIT":
            return referral.record_ed_exit(event.occurred_at, now, actor=actor)
    raise ValueError(f"unknown patient event effect {event.effect!r}")


async def apply_patient_event(pool: asyncpg.Pool, unanswered_after: timedelta, event: PatientEvent,
                              now: datetime) -> dict:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", event.message_key)
        earlier = await conn.fetchval("SELECT outcome FROM patient_event_receipts WHERE message_key = $1",
                                      event.message_key)
        if earlier is not None:
            return json.loads(earlier)
        store = ReferralStore(conn, unanswered_after)
        if event.referral_id:
            ids = await conn.fetch("SELECT referral_id FROM referrals WHERE referral_id = $1", uuid.UUID(event.referral_id))
        else:
            ids = await conn.fetch("SELECT referral_id FROM referrals WHERE patient_pseudonym = $1 "
                                   "ORDER BY requested_at DESC", event.pseudonym)
        outcome: dict = {"outcome": "UNMATCHED", "referral_id": None, "code": None}
        for row in ids:
            referral = await store.load(str(row["referral_id"]))
            if referral is None or not _concerns(referral, event):
                continue
            # An HAD's report follows the referral it accepted, closed or not; a hospital's only
            # concerns a referral still waiting for its HAD.
            if event.effect in HOSPITAL_EFFECTS and referral.status in (Status.CANCELLED, Status.INELIGIBLE,
                                                                        Status.DISCHARGED):
                continue
            outcome["referral_id"] = referral.referral_id
            try:
                events = _decide(referral, event, now)
            except IllegalTransition as exc:
                outcome.update(outcome="REFUSED", code=exc.code)
            else:
                await store.append(referral, events)
                outcome.update(outcome="APPLIED" if events else "MATCHED")
                await store.audit(f"gateway:{event.message_key}", f"gateway:{event.sender_finess}",
                                  f"gateway.{event.effect.lower()}", referral.referral_id, referral.department)
            break
        await conn.execute("INSERT INTO patient_event_receipts (message_key, outcome) VALUES ($1, $2)",
                           event.message_key, json.dumps(outcome))
        return outcome
