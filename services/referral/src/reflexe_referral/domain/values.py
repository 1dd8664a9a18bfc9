"""The minimal data set of a referral.

No direct identifiers, ever: the patient is a pseudonym computed by the source, with a
birth year rather than a birth date, and no name or INS.
Type checks belong to the edge (API schemas); `ReferralRequest.validate` holds the domain
rules a type cannot express. Department and commune existence are checked against the
geography elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from reflexe_common.ages import PossibleAges
from reflexe_common.finess import FINESS_PROBLEM, is_finess
from reflexe_common.privacy import PSEUDONYM_DESCRIPTION, find_direct_identifier, is_pseudonym
from reflexe_common.vocabulary import (
    CHILDBEARING_AGES,
    KARNOFSKY_MAX_BY_MPP,
    MAIN_MPP_CODES,
    MPP_CODES,
    MPP_FOR_CHILDBEARING_WOMEN,
    MPP_FOR_UNDER_3,
    MPP_LABELS,
    UNDER_3_YEARS,
    Equipment,
    PlaceOfCare,
    Reason,
    Sex,
    SourceKind,
    Urgency,
)

Problem = tuple[str, str]  # (field_path, message)

OLDEST_BIRTH_YEAR = 1900


def is_valid_finess(value: str) -> bool:
    return is_finess(value)


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    finess: str
    unit: str
    prescriber_id: str


@dataclass(frozen=True)
class Patient:
    pseudonym: str
    birth_year: int
    sex: Sex
    care_commune: str  # INSEE code of the commune where care takes place
    place_of_care: PlaceOfCare
    ehpad_finess: str | None


@dataclass(frozen=True)
class Clinical:
    main_mpp: str
    associated_mpp: tuple[str, ...]
    karnofsky: int
    equipment: frozenset[Equipment]
    palliative: bool
    urgency: Urgency
    planned_date: date | None
    expected_duration_days: int


@dataclass(frozen=True)
class Conditions:
    patient_consent: bool
    gp_agreement: bool
    caregiver_present: bool

    def missing(self) -> tuple[str, ...]:
        """The conditions an offer needs and this referral lacks, in a stable order
        (docs/domain.md, "Consents as conditions"). A caregiver is the HAD's to assess: not one."""
        required = (("patient_consent", self.patient_consent), ("gp_agreement", self.gp_agreement))
        return tuple(name for name, given in required if not given)


@dataclass(frozen=True)
class AvisHad:
    """Eligibility opinion given at the ED by the HAD liaison nurse."""

    eligible: bool
    reason: Reason | None
    text: str


@dataclass(frozen=True)
class ReferralRequest:
    referral_id: str
    department: str
    source: Source
    patient: Patient
    clinical: Clinical
    conditions: Conditions
    ed_arrival_at: datetime | None
    requested_at: datetime
    desired_admission_at: datetime | None
    avis: AvisHad | None

    def validate(self) -> list[Problem]:
        """Domain-rule problems, empty when the request is acceptable."""
        return [
            *self._source_problems(),
            *self._patient_problems(),
            *self._clinical_problems(),
            *self._coherence_problems(),
            *self._time_problems(),
            *self._avis_problems(),
            *self._free_text_problems(),
        ]

    def _source_problems(self) -> list[Problem]:
        # An EHPAD source usually means place of care EHPAD, but a resident can be cared
        # for at a relative's home: deliberately not enforced.
        if not is_valid_finess(self.source.finess):
            return [("source.finess", FINESS_PROBLEM)]
        return []

    def _patient_problems(self) -> list[Problem]:
        patient, problems = self.patient, []
        if not is_pseudonym(patient.pseudonym):
            problems.append(("patient.pseudonym", f"must be {PSEUDONYM_DESCRIPTION}"))
        if not OLDEST_BIRTH_YEAR <= patient.birth_year <= self.requested_at.year:
            problems.append(
                (
                    "patient.birth_year",
                    f"must be between {OLDEST_BIRTH_YEAR} and {self.requested_at.year}",
                )
            )
        if patient.place_of_care is PlaceOfCare.EHPAD:
            if patient.ehpad_finess is None:
                problems.append(("patient.ehpad_finess", "required when care is in an EHPAD"))
            elif not is_valid_finess(patient.ehpad_finess):
                problems.append(("patient.ehpad_finess", FINESS_PROBLEM))
        elif patient.ehpad_finess is not None:
            problems.append(("patient.ehpad_finess", "must be empty when care is at home"))
        return problems

    def _clinical_problems(self) -> list[Problem]:
        clinical, problems = self.clinical, []
        if clinical.main_mpp not in MAIN_MPP_CODES:
            why = (
                "MPP 25 may only be associated"
                if clinical.main_mpp in MPP_CODES
                else "unknown MPP code"
            )
            problems.append(("clinical.main_mpp", why))
        seen: set[str] = set()
        for i, code in enumerate(clinical.associated_mpp):
            path = f"clinical.associated_mpp[{i}]"
            if code not in MPP_CODES:
                problems.append((path, "unknown MPP code"))
            elif code == clinical.main_mpp:
                problems.append((path, "duplicates the main MPP"))
            elif code in seen:
                problems.append((path, "listed twice"))
            seen.add(code)
        if not (0 <= clinical.karnofsky <= 100 and clinical.karnofsky % 10 == 0):
            problems.append(("clinical.karnofsky", "must be 0, 10, ... or 100"))
        if clinical.urgency is Urgency.PLANNED and clinical.planned_date is None:
            problems.append(("clinical.planned_date", "required for a planned admission"))
        if clinical.expected_duration_days < 1:
            problems.append(("clinical.expected_duration_days", "must be at least 1"))
        return problems

    def _coherence_problems(self) -> list[Problem]:
        """MPP codes the patient cannot have. With a birth year only, the patient's age is one
        of two values (reflexe_common.ages): a code is refused only when every possible age
        rules it out, so a real patient is never turned away for the missing birthday."""
        clinical, patient = self.clinical, self.patient
        if not OLDEST_BIRTH_YEAR <= patient.birth_year <= self.requested_at.year:
            return []  # reported on patient.birth_year
        ages = PossibleAges.on(patient.birth_year, self.requested_at.date())
        coded = [("clinical.main_mpp", clinical.main_mpp),
                 *((f"clinical.associated_mpp[{i}]", code) for i, code in enumerate(clinical.associated_mpp))]
        problems: list[Problem] = []
        for path, code in coded:
            what = f"MPP {code} ({MPP_LABELS.get(code, '?')})"
            if code in MPP_FOR_CHILDBEARING_WOMEN:
                low, high = CHILDBEARING_AGES
                if patient.sex is not Sex.F:
                    problems.append((path, f"{what} is for a female patient; patient.sex is {patient.sex}"))
                elif not ages.may_be_within(low, high):
                    # The ages, not the birth year: a dead letter's reason is logged.
                    problems.append((path, f"{what} is for a woman aged {low} to {high}; from patient.birth_year "
                                           f"the patient is {ages}"))
            if code in MPP_FOR_UNDER_3 and not ages.may_be_under(UNDER_3_YEARS):
                problems.append((path, f"{what} is for a child under {UNDER_3_YEARS}; from patient.birth_year "
                                       f"the patient is at least {ages.youngest}"))
            limit = KARNOFSKY_MAX_BY_MPP.get(code)
            if limit is not None and clinical.karnofsky > limit:
                problems.append(("clinical.karnofsky", f"{what} implies a Karnofsky index of {limit} % or less "
                                                       f"(a dependent patient), not {clinical.karnofsky} %"))
        return problems

    def _time_problems(self) -> list[Problem]:
        # Naive datetimes would make delays (the < 24 h target) depend on the server's zone.
        stamps = {
            "ed_arrival_at": self.ed_arrival_at,
            "requested_at": self.requested_at,
            "desired_admission_at": self.desired_admission_at,
        }
        return [
            (name, "must carry a time zone")
            for name, value in stamps.items()
            if value is not None and value.utcoffset() is None
        ]

    def _free_text_problems(self) -> list[Problem]:
        # The API's schemas refuse these already; a referral arriving on Kafka is checked here.
        texts = {"source.unit": self.source.unit, "source.prescriber_id": self.source.prescriber_id,
                 "avis.text": self.avis.text if self.avis else ""}
        return [(name, f"free text must not contain what looks like {found}")
                for name, text in texts.items() if (found := find_direct_identifier(text))]

    def _avis_problems(self) -> list[Problem]:
        if self.avis is not None and not self.avis.eligible and self.avis.reason is None:
            return [("avis.reason", "required when the avis is negative")]
        return []
