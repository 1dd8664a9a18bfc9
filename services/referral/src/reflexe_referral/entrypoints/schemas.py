"""The referral API's JSON shapes. Unknown fields are refused: a client must not be able to
slip a name, an INS or a birth date into the platform."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from reflexe_common.finess import Finess
from reflexe_common.privacy import FreeText, Pseudonym
from reflexe_common.visibility import own_explanation
from reflexe_common.vocabulary import Equipment, PlaceOfCare, Reason, Sex, SourceKind, Urgency
from reflexe_referral.domain import values
from reflexe_referral.domain.model import Referral, Status


FREE_TEXT = "free text; refused if it holds what looks like a NIR/INS or a full date (see docs/privacy.md)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceIn(_Strict):
    kind: SourceKind
    finess: Finess = Field(description="FINESS of the sending establishment")
    unit: FreeText = Field("", max_length=100)
    prescriber_id: FreeText = Field("", max_length=50, description="RPPS or local id of the prescriber")


class PatientIn(_Strict):
    pseudonym: Pseudonym
    birth_year: int
    sex: Sex
    care_commune: str = Field(pattern=r"^[0-9][0-9AB][0-9]{3}$", description="INSEE code of the commune where care takes place")
    place_of_care: PlaceOfCare
    ehpad_finess: Finess | None = Field(None, description="FINESS of the EHPAD where care takes place")


class ClinicalIn(_Strict):
    main_mpp: str = Field(description="PMSI-HAD mode de prise en charge principal, e.g. '03'")
    associated_mpp: list[str] = Field(default_factory=list, max_length=10)
    karnofsky: int
    equipment: list[Equipment] = Field(default_factory=list)
    palliative: bool = False
    urgency: Urgency = Urgency.WITHIN_24H
    planned_date: date | None = None
    expected_duration_days: int = Field(14, ge=1, le=365)


class ConditionsIn(_Strict):
    patient_consent: bool
    gp_agreement: bool
    caregiver_present: bool


class AvisIn(_Strict):
    eligible: bool
    reason: Reason | None = None
    text: FreeText = Field("", max_length=2000, description=FREE_TEXT)


class ReferralIn(_Strict):
    referral_id: uuid.UUID | None = Field(None, description="the client's idempotency key; generated when absent")
    source: SourceIn
    patient: PatientIn
    clinical: ClinicalIn
    conditions: ConditionsIn
    ed_arrival_at: AwareDatetime | None = None
    requested_at: AwareDatetime | None = None
    desired_admission_at: AwareDatetime | None = None
    avis: AvisIn | None = None

    def to_domain(self, department: str, referral_id: str, now: datetime) -> values.ReferralRequest:
        return values.ReferralRequest(
            referral_id=referral_id,
            department=department,
            source=values.Source(self.source.kind, self.source.finess, self.source.unit, self.source.prescriber_id),
            patient=values.Patient(self.patient.pseudonym, self.patient.birth_year, self.patient.sex, self.patient.care_commune,
                                   self.patient.place_of_care, self.patient.ehpad_finess),
            clinical=values.Clinical(self.clinical.main_mpp, tuple(self.clinical.associated_mpp), self.clinical.karnofsky,
                                     frozenset(self.clinical.equipment), self.clinical.palliative, self.clinical.urgency,
                                     self.clinical.planned_date, self.clinical.expected_duration_days),
            conditions=values.Conditions(self.conditions.patient_consent, self.conditions.gp_agreement,
                                         self.conditions.caregiver_present),
            ed_arrival_at=self.ed_arrival_at,
            requested_at=(self.requested_at or now).astimezone(UTC),
            desired_admission_at=self.desired_admission_at,
            avis=values.AvisHad(self.avis.eligible, self.avis.reason, self.avis.text) if self.avis else None,
        )


class ConditionsUpdateIn(_Strict):
    patient_consent: bool | None = Field(None, description="absent: unchanged")
    gp_agreement: bool | None = Field(None, description="absent: unchanged")
    caregiver_present: bool | None = Field(None, description="absent: unchanged")


class RequestUpdateIn(_Strict):
    """What a source may change in its request before an HAD accepts it: the conditions. The other
    fields are what the matcher and the HADs decided on; changing them means a new referral."""

    conditions: ConditionsUpdateIn

    def updated_conditions(self, current: values.Conditions) -> values.Conditions:
        given = self.conditions.model_dump(exclude_none=True)
        return values.Conditions(**{**vars(current), **given})


class DeclineIn(_Strict):
    reason: Reason
    text: FreeText = Field("", max_length=2000, description=FREE_TEXT)


class CloseIn(_Strict):
    reason: Reason
    text: FreeText = Field("", max_length=2000, description=FREE_TEXT)


class DeskOfferIn(_Strict):
    had_finess: Finess


class WidenIn(_Strict):
    departments: list[str] = Field(min_length=1, max_length=10)


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def request_view(request: values.ReferralRequest) -> dict[str, Any]:
    """Every field of the request's data set, as the hospital sent it: those who may see the
    referral need all of it to decide (a birth year, never a birth date; a pseudonym, never a name)."""
    source, patient, clinical, conditions, avis = (request.source, request.patient, request.clinical,
                                                   request.conditions, request.avis)
    return {
        "referral_id": request.referral_id,
        "department": request.department,
        "source": {"kind": str(source.kind), "finess": source.finess, "unit": source.unit,
                   "prescriber_id": source.prescriber_id},
        "patient": {"pseudonym": patient.pseudonym, "birth_year": patient.birth_year, "sex": str(patient.sex),
                    "care_commune": patient.care_commune, "place_of_care": str(patient.place_of_care),
                    "ehpad_finess": patient.ehpad_finess},
        "clinical": {"main_mpp": clinical.main_mpp, "associated_mpp": list(clinical.associated_mpp),
                     "karnofsky": clinical.karnofsky, "equipment": sorted(clinical.equipment),
                     "palliative": clinical.palliative, "urgency": str(clinical.urgency),
                     "planned_date": _iso(clinical.planned_date),
                     "expected_duration_days": clinical.expected_duration_days},
        "conditions": {"patient_consent": conditions.patient_consent, "gp_agreement": conditions.gp_agreement,
                       "caregiver_present": conditions.caregiver_present},
        "ed_arrival_at": _iso(request.ed_arrival_at),
        "requested_at": _iso(request.requested_at),
        "desired_admission_at": _iso(request.desired_admission_at),
        "avis": None if avis is None else {"eligible": avis.eligible, "reason": avis.reason and str(avis.reason),
                                           "text": avis.text},
    }


def referral_view(referral: Referral) -> dict[str, Any]:
    """What callers allowed to see a referral get: the whole request, its state and clocks, never a
    direct identifier."""
    offer = referral.current_offer
    return {
        **request_view(referral.request),
        "status": str(referral.status),
        "version": referral.version,
        # What keeps an INCOMPLETE referral from being offered (the desk's queue shows it).
        "missing_conditions": list(referral.missing_conditions),
        "current_offer": None if offer is None else {
            "offer_id": offer.offer_id, "had_finess": offer.had_finess, "hold_until": offer.hold_until.isoformat(),
            "made_at": offer.made_at.isoformat(), "explanation": offer.explanation, "by_desk": offer.by_desk,
        },
        "accepted_had": referral.accepted_had,
        # Accepted subject to the liaison nurse's evaluation visit: to be confirmed or withdrawn.
        "evaluation_pending": referral.evaluation_pending,
        "current_avis": None if referral.avis is None else {
            "eligible": referral.avis.eligible, "reason": referral.avis.reason and str(referral.avis.reason),
            "text": referral.avis.text},
        "admitted_had": referral.admitted_had,
        "closed_reason": referral.closed_reason and str(referral.closed_reason),
        "accepted_at": _iso(referral.accepted_at),
        "admitted_at": _iso(referral.admitted_at),
        "discharged_at": _iso(referral.discharged_at),
        "closed_at": _iso(referral.closed_at),
        "ed_exited_at": _iso(referral.ed_exited_at),
        "tried_hads": sorted(referral.tried_hads),
        "departments_searched": sorted(referral.departments),
        "clocks": [{"kind": str(c.kind), "due_at": c.due_at.isoformat(), "offer_id": c.offer_id} for c in referral.clocks()],
    }


def had_referral_view(referral: Referral, finess: str) -> dict[str, Any]:
    """What an HAD sees of a referral offered to it or in its care: the whole request, but no other
    HAD's name, figures or answer."""
    view = referral_view(referral)
    offer = view["current_offer"]
    if offer is not None:
        # Only its own offer is ever current while an HAD may see the referral; checked again all the same.
        view["current_offer"] = ({**offer, "explanation": own_explanation(offer["explanation"], finess)}
                                 if offer["had_finess"] == finess else None)
    view["tried_hads"] = [finess] if finess in referral.tried_hads else []
    for key in ("accepted_had", "admitted_had"):
        if view[key] != finess:
            view[key] = None
    own_offer_id = referral.current_offer.offer_id if view["current_offer"] else None
    view["clocks"] = [c for c in view["clocks"] if c["offer_id"] in (None, own_offer_id)]
    return view


def liaison_referral_view(referral: Referral, finess: str) -> dict[str, Any]:
    """What a liaison nurse sees of an open referral of her departments: what she needs to find the
    patient at the bedside (the requesting establishment and unit, the pseudonym) and to give the
    avis HAD (care needs, urgency, commune, state, the current avis); not the birth year, sex,
    consents or prescriber, and nothing of another HAD: only whether a place is held, and whether
    her own HAD holds it (pending its evaluation or not)."""
    request, offer = referral.request, referral.current_offer
    holder = referral.accepted_had or (offer.had_finess if offer is not None else None)
    own = holder is not None and holder == finess
    return {
        "referral_id": request.referral_id,
        "department": request.department,
        "status": str(referral.status),
        "requested_at": _iso(request.requested_at),
        "source": {"kind": str(request.source.kind), "finess": request.source.finess, "unit": request.source.unit},
        "patient": {"pseudonym": request.patient.pseudonym, "care_commune": request.patient.care_commune,
                    "place_of_care": str(request.patient.place_of_care)},
        "clinical": {"main_mpp": request.clinical.main_mpp, "associated_mpp": list(request.clinical.associated_mpp),
                     "karnofsky": request.clinical.karnofsky, "equipment": sorted(request.clinical.equipment),
                     "palliative": request.clinical.palliative, "urgency": str(request.clinical.urgency),
                     "planned_date": _iso(request.clinical.planned_date)},
        "place_held": holder is not None and referral.status in (Status.OFFERED, Status.ACCEPTED),
        "held_by_own_had": own and referral.status in (Status.OFFERED, Status.ACCEPTED),
        "evaluation_pending": own and referral.evaluation_pending,
        "current_avis": None if referral.avis is None else {
            "eligible": referral.avis.eligible, "reason": referral.avis.reason and str(referral.avis.reason),
            "text": referral.avis.text},
    }
