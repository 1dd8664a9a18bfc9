"""What a desk sees of an event: its live stream entry, and the French words for it.

Pure: the same wording serves the desk page's alerts and the e-mails. Pseudonymous ids only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reflexe_common.labels import CONDITION_FR, REASON_FR, URGENCY_FR
from reflexe_notify.domain.routing import EventKind

# Events a desk must act on: the clocks that ran out, no HAD found, a notification lost.
ALERTS = frozenset({
    str(EventKind.OFFER_UNANSWERED), str(EventKind.ADMISSION_OVERDUE), str(EventKind.REFERRAL_ESCALATED),
    str(EventKind.DELIVERY_FAILED), str(EventKind.OFFER_EXPIRED), str(EventKind.OFFER_DECLINED),
})



def reason_fr(code: str | None) -> str:
    return REASON_FR.get(code or "", code or "")


def short(referral_id: str | None) -> str:
    """How a referral is named to people: the start of its (pseudonymous) id."""
    return (referral_id or "")[:8]


def describe(kind: str, data: dict[str, Any]) -> tuple[str, str]:
    """(title, sentence) in French for an event kind and its data."""
    ref = short(data.get("referral_id"))
    had = data.get("had_finess") or ""
    match kind:
        case "offer.proposed":
            by = " par le bureau" if data.get("by_desk") else ""
            return "Offre proposée", f"Demande {ref} proposée{by} à l'HAD {had}. {data.get('explanation') or ''}".strip()
        case "offer.unanswered":
            return "Offre sans réponse", f"L'HAD {had} n'a pas répondu à l'offre pour la demande {ref}."
        case "offer.accepted":
            if data.get("pending_evaluation"):
                return "Offre acceptée sous réserve", f"L'HAD {had} a accepté la demande {ref} sous réserve de l'évaluation."
            return "Offre acceptée", f"L'HAD {had} a accepté la demande {ref}."
        case "offer.evaluation_confirmed":
            return "Évaluation confirmée", f"L'HAD {had} a confirmé la demande {ref} après l'évaluation."
        case "offer.acceptance_withdrawn":
            why = reason_fr(data.get("reason"))
            return ("Acceptation retirée", f"L'HAD {had} a retiré son acceptation de la demande {ref} après l'évaluation"
                    + (f" ({why}); recherche d'une autre HAD." if why else "; recherche d'une autre HAD."))
        case "referral.avis":
            if data.get("eligible"):
                return "Avis HAD favorable", f"Demande {ref} : avis HAD favorable de l'IDE de liaison."
            return "Avis HAD défavorable", f"Demande {ref} : avis HAD défavorable ({reason_fr(data.get('reason'))})."
        case "offer.declined":
            why = reason_fr(data.get("reason"))
            return "Offre refusée", f"L'HAD {had} a refusé la demande {ref}" + (f" ({why})." if why else ".")
        case "offer.expired":
            return "Offre expirée", f"L'offre faite à l'HAD {had} pour la demande {ref} a expiré."
        case "offer.withdrawn":
            return "Offre retirée", f"L'offre faite à l'HAD {had} pour la demande {ref} a été retirée."
        case "referral.requested":
            return "Nouvelle demande", f"Demande {ref} reçue (MPP {data.get('main_mpp', '')}, {_urgency(data.get('urgency'))})."
        case "referral.escalated":
            return "Aucune HAD trouvée", f"Demande {ref} : aucune HAD trouvée — {data.get('why') or 'action du bureau requise'}."
        case "referral.admitted":
            return "Patient admis", f"Demande {ref} : patient admis par l'HAD {had}."
        case "referral.cancelled":
            why = reason_fr(data.get("reason"))
            return "Demande clôturée", f"Demande {ref} clôturée" + (f" ({why})." if why else ".")
        case "referral.ineligible":
            return "Demande non éligible", f"Demande {ref} déclarée non éligible ({reason_fr(data.get('reason'))})."
        case "referral.discharged":
            return "Fin de séjour", f"Demande {ref} : fin de séjour en HAD."
        case "referral.updated":
            fields = ", ".join(CONDITION_FR.get(f.removeprefix("conditions."), f) for f in data.get("changed_fields", []))
            still = ", ".join(CONDITION_FR.get(m, m) for m in data.get("missing_conditions", []))
            return "Demande mise à jour", (f"Demande {ref} mise à jour ({fields})" + (f" ; manque encore : {still}." if still else "."))
        case "referral.completed":
            return "Demande complétée", f"Demande {ref} : consentements reçus, recherche d'une HAD lancée."
        case "referral.widened":
            return "Recherche élargie", f"Demande {ref} : recherche élargie à {', '.join(data.get('departments', []))}."
        case "referral.desk_offer":
            return "Choix du bureau", f"Demande {ref} : le bureau a choisi l'HAD {had}."
        case "referral.ed_exit":
            return "Sortie des urgences", f"Demande {ref} : l'établissement a signalé la sortie du patient de ses urgences."
        case "admission.overdue":
            if planned := data.get("planned_date"):  # ISO date: the end of that day was the deadline
                day = "/".join(reversed(planned.split("-")))
                return "Admission en retard", f"Demande {ref} : patient non admis à la date prévue ({day})."
            return "Admission en retard", f"Demande {ref} : patient non admis sous 24 h après la demande."
        case "delivery.failed":
            return ("Notification non remise",
                    f"La notification {data.get('event_type', '')} à {data.get('recipient', '')} n'a pas pu être remise "
                    f"après {data.get('attempts', '?')} tentatives.")
        case "capacity.changed":
            return "Capacité", f"HAD {had} : {data.get('live_places', '?')} place(s) disponible(s)."
    return kind, ref


# The referral service's event types (a referral's timeline) as the kinds described above.
TIMELINE_KINDS = {
    "ReferralRequested": "referral.requested", "ReferralDeclaredIneligible": "referral.ineligible",
    "OfferMade": "offer.proposed", "OfferAccepted": "offer.accepted", "OfferDeclined": "offer.declined",
    "OfferExpired": "offer.expired", "OfferWithdrawn": "offer.withdrawn", "OfferUnanswered": "offer.unanswered",
    "ReferralEscalated": "referral.escalated", "SearchWidened": "referral.widened",
    "DeskOfferRequested": "referral.desk_offer", "PatientAdmitted": "referral.admitted",
    "PatientDischarged": "referral.discharged", "ReferralCancelled": "referral.cancelled",
    "AdmissionOverdue": "admission.overdue", "EdExitRecorded": "referral.ed_exit",
    "ReferralRequestUpdated": "referral.updated", "ReferralCompleted": "referral.completed",
    "EvaluationConfirmed": "offer.evaluation_confirmed", "AcceptanceWithdrawn": "offer.acceptance_withdrawn",
    "AvisGiven": "referral.avis",
}


def describe_timeline_event(event_type: str, data: dict[str, Any]) -> tuple[str, str]:
    """(title, sentence) in French for one event of a referral's timeline, worded as the alerts are."""
    return describe(TIMELINE_KINDS.get(event_type, event_type), data)


def desks_told(department: str, *others: Iterable[str]) -> list[str]:
    """The desks whose stream an event enters: its own department's first, then each other one
    (a multi-department HAD's, a neighbour the search was widened to), once each."""
    return list(dict.fromkeys(d for d in (department, *(d for group in others for d in group)) if d))


def _urgency(code: str | None) -> str:
    label = URGENCY_FR.get(code or "")
    return label.lower() if label else code or ""


@dataclass(frozen=True)
class DeskEvent:
    """One entry of a department's live stream."""

    department: str
    origin: str
    kind: str
    occurred_at: datetime
    data: dict[str, Any]

    @property
    def widened_here(self) -> bool:
        """A referral of another department whose search now includes this desk's: a request for
        its help, so an alert on its stream (on the widening desk's own, only a record)."""
        return self.kind == "referral.widened" and self.data.get("department") not in (None, self.department)

    @property
    def alert(self) -> bool:
        return self.kind in ALERTS or self.widened_here

    def payload(self, seq: int) -> dict[str, Any]:
        title, text = describe(self.kind, self.data)
        if self.widened_here:
            title = "Demande d'un département voisin"
            text = (f"Demande {short(self.data.get('referral_id'))} du département {self.data.get('department')} : "
                    "recherche élargie à votre département.")
        return {"seq": seq, "type": self.kind, "department": self.department, "occurred_at": self.occurred_at.isoformat(),
                "alert": self.alert, "title": title, "text": text, "data": self.data}
