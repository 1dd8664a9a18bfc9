"""The French words of the platform's vocabulary, and its one duration formatter.

People read the same codes on the desk's and the HADs' pages, in the alerts and e-mails, and in
the matcher's explanations: each code has its label here only, keyed by the vocabulary's values
(a test checks that no table names a value the vocabulary does not have, nor misses one).
Labels are capitalised as a page shows them; a sentence lower-cases them."""

from __future__ import annotations

from reflexe_common.vocabulary import CapacityStatus, Equipment, Mention, PlaceOfCare, Reason, Sex, SourceKind, Urgency

# The conditions a referral states (`conditions.<name>`): without consent and the GP's agreement it
# stays INCOMPLETE, and the desk's queue names what is missing.
CONDITION_FR = {"patient_consent": "consentement du patient", "gp_agreement": "accord du médecin traitant",
                "caregiver_present": "aidant présent"}
# The referral lifecycle's statuses (the referral service's domain owns the lifecycle itself).
REFERRAL_STATUS_FR = {
    "INCOMPLETE": "Incomplète — en attente", "REQUESTED": "En recherche", "OFFERED": "Proposée",
    "ACCEPTED": "Acceptée", "ESCALATED": "Sans HAD — à traiter", "ADMITTED": "Admis",
    "INELIGIBLE": "Non éligible", "CANCELLED": "Clôturée", "DISCHARGED": "Sortie",
}
URGENCY_FR = {Urgency.WITHIN_24H: "Sous 24 h", Urgency.PLANNED: "Programmée"}
CAPACITY_STATUS_FR = {CapacityStatus.OPEN: "Ouverte", CapacityStatus.SATURATED: "Saturée", CapacityStatus.CLOSED: "Fermée"}
SOURCE_FR = {SourceKind.ED: "Urgences", SourceKind.UHCD: "UHCD", SourceKind.WARD: "Service", SourceKind.EHPAD: "EHPAD",
             SourceKind.GP: "Médecin traitant"}
PLACE_FR = {PlaceOfCare.HOME: "Domicile", PlaceOfCare.EHPAD: "EHPAD"}
SEX_FR = {Sex.F: "Femme", Sex.M: "Homme", Sex.UNKNOWN: "Non précisé"}
EQUIPMENT_FR = {
    Equipment.PCA_PUMP: "Pompe PCA", Equipment.SYRINGE_DRIVER: "Pousse-seringue électrique", Equipment.MEOPA: "MEOPA",
    Equipment.OXYGEN: "Oxygène", Equipment.PARENTERAL_NUTRITION: "Nutrition parentérale",
    Equipment.TRANSFUSION: "Transfusion", Equipment.ISOLATION: "Isolement",
}
MENTION_FR = {
    Mention.SOCLE: "socle", Mention.READAPTATION: "réadaptation", Mention.ANTE_POST_PARTUM: "ante et post-partum",
    Mention.ENFANTS_MOINS_3_ANS: "enfants de moins de 3 ans",
}
# Refusal, ineligibility and cancellation reasons, as said within a sentence.
REASON_FR = {
    Reason.NO_CAPACITY: "plus de place", Reason.OUT_OF_ZONE: "hors zone", Reason.CARE_NOT_PROVIDED: "soins non assurés",
    Reason.MEDICAL_NOT_ELIGIBLE: "non éligible (médical)", Reason.SOCIAL_NOT_ELIGIBLE: "non éligible (social)",
    Reason.PATIENT_REFUSED: "refus du patient", Reason.GP_REFUSED: "refus du médecin traitant",
    Reason.INCOMPLETE_REQUEST: "demande incomplète", Reason.PATIENT_HOSPITALISED: "patient hospitalisé",
    Reason.PATIENT_DECEASED: "patient décédé", Reason.OTHER: "autre motif",
}

# The pages' script formats its running clocks with these same units (rendered into each page).
DURATION_UNITS = {"second": "s", "minute": "min", "hour": "h", "day": "j"}


def duration_fr(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min', '2 j 4 h'."""
    u = DURATION_UNITS
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} {u['second']}"
    if s < 3600:
        return f"{s // 60} {u['minute']}"
    if s < 86400:
        return f"{s // 3600} {u['hour']} {s % 3600 // 60:02d} {u['minute']}"
    return f"{s // 86400} {u['day']} {s % 86400 // 3600} {u['hour']}"
