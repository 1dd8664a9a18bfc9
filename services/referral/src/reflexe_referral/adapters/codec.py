"""Referral domain events ↔ protobuf contracts (reflexe.v1). The proto message is both the
wire format on Kafka and the stored form of the event log, so there is one serialisation."""

from __future__ import annotations

from datetime import date

from google.protobuf.message import Message
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import dt, ts
from reflexe_common.vocabulary import Equipment, PlaceOfCare, Reason, Sex, SourceKind, Urgency
from reflexe_referral.domain import events as ev
from reflexe_referral.domain.values import AvisHad, Clinical, Conditions, Patient, ReferralRequest, Source

# Domain event class ↔ proto message class, and the fields each carries beyond the header.
_PAIRS: dict[type, tuple[type[Message], tuple[str, ...]]] = {
    ev.ReferralDeclaredIneligible: (pb.ReferralDeclaredIneligible, ("reason", "text")),
    ev.EvaluationConfirmed: (pb.EvaluationConfirmed, ("offer_id", "had_finess")),
    ev.AcceptanceWithdrawn: (pb.AcceptanceWithdrawn, ("offer_id", "had_finess", "reason", "text")),
    ev.OfferDeclined: (pb.OfferDeclined, ("offer_id", "had_finess", "reason", "text")),
    ev.OfferExpired: (pb.OfferExpired, ("offer_id", "had_finess")),
    ev.OfferWithdrawn: (pb.OfferWithdrawn, ("offer_id", "had_finess", "why")),
    ev.OfferUnanswered: (pb.OfferUnanswered, ("offer_id", "had_finess")),
    ev.ReferralEscalated: (pb.ReferralEscalated, ("why",)),
    ev.DeskOfferRequested: (pb.DeskOfferRequested, ("had_finess",)),
    ev.PatientDischarged: (pb.PatientDischarged, ("had_finess",)),
    ev.ReferralCancelled: (pb.ReferralCancelled, ("reason", "text")),
    ev.ReferralCompleted: (pb.ReferralCompleted, ()),
}
_BY_PROTO = {proto.DESCRIPTOR.full_name: (cls, fields) for cls, (proto, fields) in _PAIRS.items()}
_REASON_FIELDS = {"reason"}


def request_to_proto(r: ReferralRequest) -> pb.ReferralRequest:
    out = pb.ReferralRequest(
        referral_id=r.referral_id,
        department=r.department,
        source=pb.Source(kind=r.source.kind, finess=r.source.finess, unit=r.source.unit, prescriber_id=r.source.prescriber_id),
        patient=pb.Patient(
            pseudonym=r.patient.pseudonym, birth_year=r.patient.birth_year, sex=r.patient.sex,
            care_commune=r.patient.care_commune, place_of_care=r.patient.place_of_care,
            ehpad_finess=r.patient.ehpad_finess or "",
        ),
        clinical=pb.Clinical(
            main_mpp=r.clinical.main_mpp, associated_mpp=list(r.clinical.associated_mpp), karnofsky=r.clinical.karnofsky,
            equipment=sorted(r.clinical.equipment), palliative=r.clinical.palliative, urgency=r.clinical.urgency,
            planned_date=r.clinical.planned_date.isoformat() if r.clinical.planned_date else "",
            expected_duration_days=r.clinical.expected_duration_days,
        ),
        conditions=conditions_to_proto(r.conditions),
        ed_arrival_at=ts(r.ed_arrival_at),
        requested_at=ts(r.requested_at),
        desired_admission_at=ts(r.desired_admission_at),
    )
    if r.avis is not None:
        out.avis.CopyFrom(pb.AvisHad(eligible=r.avis.eligible, reason=r.avis.reason or "", text=r.avis.text))
    return out


def conditions_to_proto(c: Conditions) -> pb.Conditions:
    return pb.Conditions(patient_consent=c.patient_consent, gp_agreement=c.gp_agreement,
                         caregiver_present=c.caregiver_present)


def conditions_from_proto(m: pb.Conditions) -> Conditions:
    return Conditions(m.patient_consent, m.gp_agreement, m.caregiver_present)


def request_from_proto(m: pb.ReferralRequest) -> ReferralRequest:
    """Raises ValueError on codes outside the vocabulary (a poison record upstream)."""
    return ReferralRequest(
        referral_id=m.referral_id,
        department=m.department,
        source=Source(SourceKind(m.source.kind), m.source.finess, m.source.unit, m.source.prescriber_id),
        patient=Patient(
            pseudonym=m.patient.pseudonym, birth_year=m.patient.birth_year, sex=Sex(m.patient.sex or "U"),
            care_commune=m.patient.care_commune, place_of_care=PlaceOfCare(m.patient.place_of_care),
            ehpad_finess=m.patient.ehpad_finess or None,
        ),
        clinical=Clinical(
            main_mpp=m.clinical.main_mpp, associated_mpp=tuple(m.clinical.associated_mpp),
            karnofsky=m.clinical.karnofsky, equipment=frozenset(Equipment(e) for e in m.clinical.equipment),
            palliative=m.clinical.palliative, urgency=Urgency(m.clinical.urgency),
            planned_date=date.fromisoformat(m.clinical.planned_date) if m.clinical.planned_date else None,
            expected_duration_days=m.clinical.expected_duration_days,
        ),
        conditions=conditions_from_proto(m.conditions),
        ed_arrival_at=dt(m.ed_arrival_at) if m.HasField("ed_arrival_at") else None,
        requested_at=dt(m.requested_at),
        desired_admission_at=dt(m.desired_admission_at) if m.HasField("desired_admission_at") else None,
        avis=AvisHad(m.avis.eligible, Reason(m.avis.reason) if m.avis.reason else None, m.avis.text)
        if m.HasField("avis") else None,
    )


def to_proto(event: ev.Event, department: str, place_of_care: str = "") -> Message:
    header = pb.ReferralEventHeader(
        referral_id=event.referral_id, department=department, occurred_at=ts(event.occurred_at), actor=event.actor or ""
    )
    match event:
        case ev.ReferralRequested():
            return pb.ReferralRequested(header=header, request=request_to_proto(event.request),
                                        missing_conditions=list(event.missing_conditions))
        case ev.ReferralRequestUpdated():
            return pb.ReferralRequestUpdated(header=header, conditions=conditions_to_proto(event.conditions),
                                             changed_fields=list(event.changed_fields),
                                             missing_conditions=list(event.missing_conditions))
        case ev.OfferMade():
            return pb.OfferMade(header=header, offer_id=event.offer_id, had_finess=event.had_finess,
                                hold_until=ts(event.hold_until), explanation=event.explanation, by_desk=event.by_desk,
                                explanation_json=event.explanation_json)
        case ev.SearchWidened():
            return pb.SearchWidened(header=header, departments=list(event.departments))
        case ev.PatientAdmitted():
            return pb.PatientAdmitted(header=header, had_finess=event.had_finess, place_of_care=place_of_care)
        case ev.EdExitRecorded():
            return pb.EdExitRecorded(header=header, exited_at=ts(event.exited_at))
        case ev.OfferAccepted():
            return pb.OfferAccepted(header=header, offer_id=event.offer_id, had_finess=event.had_finess,
                                    pending_evaluation=event.pending_evaluation)
        case ev.AvisGiven():
            return pb.AvisGiven(header=header, eligible=event.eligible, reason=event.reason or "", text=event.text)
        case ev.AdmissionOverdue():
            return pb.AdmissionOverdue(header=header, due_at=ts(event.due_at),
                                       planned_date=event.planned_date.isoformat() if event.planned_date else "")
    proto_cls, fields = _PAIRS[type(event)]
    return proto_cls(header=header, **{f: str(getattr(event, f)) for f in fields})


def from_proto(message: Message) -> ev.Event:
    header = message.header
    common = {"referral_id": header.referral_id, "occurred_at": dt(header.occurred_at), "actor": header.actor or None}
    match message:
        case pb.ReferralRequested():
            return ev.ReferralRequested(**common, request=request_from_proto(message.request),
                                        missing_conditions=tuple(message.missing_conditions))
        case pb.ReferralRequestUpdated():
            return ev.ReferralRequestUpdated(**common, conditions=conditions_from_proto(message.conditions),
                                             changed_fields=tuple(message.changed_fields),
                                             missing_conditions=tuple(message.missing_conditions))
        case pb.OfferMade():
            return ev.OfferMade(**common, offer_id=message.offer_id, had_finess=message.had_finess,
                                hold_until=dt(message.hold_until), explanation=message.explanation,
                                by_desk=message.by_desk, explanation_json=message.explanation_json)
        case pb.SearchWidened():
            return ev.SearchWidened(**common, departments=tuple(message.departments))
        case pb.PatientAdmitted():
            return ev.PatientAdmitted(**common, had_finess=message.had_finess)
        case pb.EdExitRecorded():
            return ev.EdExitRecorded(**common, exited_at=dt(message.exited_at))
        case pb.OfferAccepted():
            return ev.OfferAccepted(**common, offer_id=message.offer_id, had_finess=message.had_finess,
                                    pending_evaluation=message.pending_evaluation)
        case pb.AvisGiven():
            return ev.AvisGiven(**common, eligible=message.eligible,
                                reason=Reason(message.reason) if message.reason else None, text=message.text)
        case pb.AdmissionOverdue():
            return ev.AdmissionOverdue(**common, due_at=dt(message.due_at),
                                       planned_date=date.fromisoformat(message.planned_date) if message.planned_date else None)
    cls, fields = _BY_PROTO[message.DESCRIPTOR.full_name]
    values = {f: Reason(getattr(message, f)) if f in _REASON_FIELDS else getattr(message, f) for f in fields}
    return cls(**common, **values)
