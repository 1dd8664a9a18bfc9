"""What an ADT event means for a referral, by who sent it (a referring hospital or an HAD).

The decision is pure; the service layer carries it out through the referral service.
"""

from __future__ import annotations

from enum import StrEnum

from .hl7 import AdtMessage


class SenderKind(StrEnum):
    HOSPITAL = "hospital"
    HAD = "had"


class Effect(StrEnum):
    ED_EXIT = "ED_EXIT"  # the patient left the emergency department (A03)
    HOSPITALISED = "HOSPITALISED"  # inpatient admission: the HAD referral is cancelled
    DECEASED = "DECEASED"  # death: the referral is cancelled
    HAD_ADMITTED = "HAD_ADMITTED"  # the HAD admitted the patient (A01 from the HAD's system)
    HAD_DISCHARGED = "HAD_DISCHARGED"  # end of the HAD stay (A03 from the HAD's system)
    UNDO = "UNDO"  # A11/A12/A13: undo the effect of the cancelled movement where it can be undone
    NONE = "NONE"  # recorded, no effect on a referral (A02 transfer, A08 update, an ED registration...)


def effect_of(message: AdtMessage, sender: SenderKind) -> Effect:
    if message.cancels or message.movement_action == "CANCEL":
        return Effect.UNDO
    trigger = message.trigger
    if sender is SenderKind.HAD:
        return {"A01": Effect.HAD_ADMITTED, "A03": Effect.HAD_DISCHARGED}.get(trigger, Effect.NONE)
    if message.death and trigger == "A03":
        return Effect.DECEASED
    if trigger == "A06" or (trigger == "A01" and message.patient_class not in ("E", "O")):
        # A01 of an emergency (E) or outpatient (O) visit is not a hospitalisation.
        return Effect.HOSPITALISED
    if trigger == "A03":
        return Effect.ED_EXIT
    return Effect.NONE
