"""The domain's shared vocabulary: codes every service agrees on.

Taken from the PMSI-HAD nomenclature (MPP codes), the 2022 authorisation reform (mentions)
and the refusal reasons the ARS follow-up asks for. Pure data: no I/O.
"""

from __future__ import annotations

from enum import StrEnum


class SourceKind(StrEnum):
    ED = "ED"  # service des urgences (SU/SAU)
    UHCD = "UHCD"  # the ED's short-stay unit
    EHPAD = "EHPAD"  # nursing home
    GP = "GP"  # médecin traitant / city practice
    WARD = "WARD"  # conventional hospital ward


class PlaceOfCare(StrEnum):
    HOME = "HOME"
    EHPAD = "EHPAD"


class Urgency(StrEnum):
    WITHIN_24H = "WITHIN_24H"
    PLANNED = "PLANNED"


class Sex(StrEnum):
    F = "F"
    M = "M"
    UNKNOWN = "U"


class Equipment(StrEnum):
    PCA_PUMP = "PCA_PUMP"
    SYRINGE_DRIVER = "SYRINGE_DRIVER"  # pousse-seringue électrique (PSE)
    MEOPA = "MEOPA"
    OXYGEN = "OXYGEN"
    PARENTERAL_NUTRITION = "PARENTERAL_NUTRITION"
    TRANSFUSION = "TRANSFUSION"
    ISOLATION = "ISOLATION"


class Mention(StrEnum):
    """Authorisation mentions since the 2022 reform; every HAD holds SOCLE."""

    SOCLE = "SOCLE"
    READAPTATION = "READAPTATION"
    ANTE_POST_PARTUM = "ANTE_POST_PARTUM"
    ENFANTS_MOINS_3_ANS = "ENFANTS_MOINS_3_ANS"


class Reason(StrEnum):
    """Refusal, ineligibility and cancellation reasons (ARS follow-up codes)."""

    NO_CAPACITY = "NO_CAPACITY"
    OUT_OF_ZONE = "OUT_OF_ZONE"
    CARE_NOT_PROVIDED = "CARE_NOT_PROVIDED"
    MEDICAL_NOT_ELIGIBLE = "MEDICAL_NOT_ELIGIBLE"
    SOCIAL_NOT_ELIGIBLE = "SOCIAL_NOT_ELIGIBLE"
    PATIENT_REFUSED = "PATIENT_REFUSED"
    GP_REFUSED = "GP_REFUSED"
    INCOMPLETE_REQUEST = "INCOMPLETE_REQUEST"
    PATIENT_HOSPITALISED = "PATIENT_HOSPITALISED"
    PATIENT_DECEASED = "PATIENT_DECEASED"
    OTHER = "OTHER"


class CapacityStatus(StrEnum):
    OPEN = "OPEN"
    SATURATED = "SATURATED"
    CLOSED = "CLOSED"


# Mode de prise en charge principal (PMSI-HAD). Labels from the 2007 decree.
MPP_LABELS: dict[str, str] = {
    "01": "Assistance respiratoire",
    "02": "Nutrition parentérale",
    "03": "Traitement intraveineux",
    "04": "Soins palliatifs",
    "05": "Chimiothérapie anticancéreuse",
    "06": "Nutrition entérale",
    "07": "Prise en charge de la douleur",
    "08": "Autres traitements",
    "09": "Pansements complexes et soins spécifiques (stomies compliquées)",
    "10": "Post-traitement chirurgical",
    "11": "Rééducation orthopédique",
    "12": "Rééducation neurologique",
    "13": "Surveillance post-chimiothérapie anticancéreuse",
    "14": "Soins de nursing lourds",
    "15": "Éducation du patient et/ou de son entourage",
    "17": "Surveillance de radiothérapie",
    "18": "Transfusion sanguine",
    "19": "Surveillance de grossesse à risque",
    "21": "Post-partum pathologique",
    "22": "Prise en charge du nouveau-né à risque",
    "24": "Surveillance d'aplasie",
    "25": "Prise en charge psychologique et/ou sociale",
    "29": "Sortie précoce de chirurgie",
}
MPP_CODES: frozenset[str] = frozenset(MPP_LABELS)

# MPP 25 may only be an associated mode, never the main one.
MAIN_MPP_CODES: frozenset[str] = MPP_CODES - {"25"}

# Which specialised mention a main or associated MPP requires (others need only SOCLE).
MENTION_REQUIRED_BY_MPP: dict[str, Mention] = {
    "11": Mention.READAPTATION,
    "12": Mention.READAPTATION,
    "19": Mention.ANTE_POST_PARTUM,
    "21": Mention.ANTE_POST_PARTUM,
    "22": Mention.ENFANTS_MOINS_3_ANS,
}

# Clinical coherence of MPP codes with the patient (checked at the door, docs/domain.md):
# 19 (grossesse à risque) and 21 (post-partum pathologique) are for a woman of child-bearing
# age; 22 (nouveau-né à risque) for a child under 3; 14 (nursing lourd) implies a dependent
# patient, Karnofsky index 50 % or less.
MPP_FOR_CHILDBEARING_WOMEN: frozenset[str] = frozenset({"19", "21"})
CHILDBEARING_AGES = (12, 55)  # inclusive, wide on purpose: refused only when surely outside
MPP_FOR_UNDER_3: frozenset[str] = frozenset({"22"})
UNDER_3_YEARS = 3
KARNOFSKY_MAX_BY_MPP: dict[str, int] = {"14": 50}

# The economic viability threshold of an HAD (ANAP, 2023): about 50 patients a day.
VIABILITY_ACTIVE_PATIENTS = 50
