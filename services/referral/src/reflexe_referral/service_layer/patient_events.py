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

from dataclasses import dataclass
from datetime import datetime

from reflexe_common.vocabulary import Reason
from reflexe_referral.domain.errors import IllegalTransition
from reflexe_referral.domain.model import Referral, Status
from reflexe_referral.service_layer.unit_of_work import UnitOfWork

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


async def apply_patient_event(uow: UnitOfWork, event: PatientEvent, now: datetime) -> dict:
    """The outcome: APPLIED, MATCHED (nothing new), REFUSED (with the domain's code) or UNMATCHED."""
    async with uow:
        referrals = uow.referrals
        await referrals.serialise(event.message_key)
        earlier = await referrals.patient_event_outcome(event.message_key)
        if earlier is not None:
            return earlier
        ids = [event.referral_id] if event.referral_id else await referrals.referral_ids_of_patient(event.pseudonym)
        outcome: dict = {"outcome": "UNMATCHED", "referral_id": None, "code": None}
        for referral_id in ids:
            referral = await referrals.load(referral_id)
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
                await referrals.append(referral, events)
                outcome.update(outcome="APPLIED" if events else "MATCHED")
                await referrals.audit(f"gateway:{event.message_key}", f"gateway:{event.sender_finess}",
                                      f"gateway.{event.effect.lower()}", referral.referral_id, referral.department)
            break
        await referrals.record_patient_event_outcome(event.message_key, outcome)
        return outcome
