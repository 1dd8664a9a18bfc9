"""Traffic: daily arrival profiles and referral bodies.

Volumes (calibration, see the seeds): about 162,000 HAD patients and 6.6 M HAD days a year in
France (2022) for 68 M inhabitants, i.e. roughly 0.9 new HAD stays per 100,000 inhabitants a
day; referrals outnumber admissions (declines, ineligible, cancelled), so the default is
**1.5 referrals per 100,000 inhabitants a day** (Hérault ≈ 18/day, Haute-Garonne ≈ 22/day).

Profiles (local time, Europe/Paris): ED referrals follow ED arrivals (peak late morning and
early evening); UHCD ones the morning round after the night in the short-stay unit; EHPAD and
ward ones office hours; GP ones consultation hours.

Clinical mix (seeds: ARS Occitanie 2021 call for projects; ANAP 2023: 25% palliative): IV
antibiotics (MPP 03), complex dressings (09), pain with PCA pump / MEOPA / syringe driver (07),
palliative care (04) about 25%, heavy nursing (14, Karnofsky ≤ 50), some réadaptation (11/12).

Each patient also has the record the hospital keeps (a fictional name, NIR and birth date): it
stays in the simulated hospital, which sends only the minimal data set: the pseudonym it computes
from the NIR with a keyed hash whose key never leaves it, a birth year, sex, the care commune's
INSEE code. The records can be written to a file (`--identities-out`) so that a privacy scan can
look for them everywhere the platform keeps or says anything.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from collections.abc import Callable
from typing import Any

from reflexe_common.vocabulary import Equipment, PlaceOfCare, Reason, SourceKind, Urgency

from reflexe_simulator.doors import PatientIdDomain
from reflexe_simulator.scenario import DepartmentScenario, SourceSpec

REFERRALS_PER_100K_PER_DAY = 1.5

# Share of each source kind in the referral flow.
SOURCE_MIX: dict[str, float] = {
    SourceKind.ED: 0.40,
    SourceKind.UHCD: 0.20,
    SourceKind.WARD: 0.15,
    SourceKind.EHPAD: 0.15,
    SourceKind.GP: 0.10,
}

# Relative hourly weights, hour 0 → 23 (local time); each row is normalised to 1 over the day.
HOURLY_WEIGHTS: dict[str, tuple[float, ...]] = {
    # ED arrivals: night trough, late-morning peak (11–12 h), early-evening peak (18–19 h).
    SourceKind.ED: (1.2, 0.9, 0.7, 0.6, 0.5, 0.6, 0.9, 1.8, 3.2, 4.6, 5.6, 6.0,
                    5.4, 4.8, 4.6, 4.8, 5.2, 5.6, 5.9, 5.5, 4.6, 3.6, 2.6, 1.8),
    # UHCD: decisions after the morning round.
    SourceKind.UHCD: (0.2, 0.2, 0.2, 0.2, 0.2, 0.3, 0.5, 1.5, 4.0, 6.0, 6.0, 4.5,
                      3.0, 2.5, 2.0, 1.8, 1.5, 1.2, 0.8, 0.6, 0.4, 0.3, 0.2, 0.2),
    # Wards: discharge planning during the working day.
    SourceKind.WARD: (0, 0, 0, 0, 0, 0, 0, 0.3, 1.5, 3.0, 4.0, 4.0,
                      2.5, 3.0, 4.0, 4.0, 3.0, 1.5, 0.5, 0, 0, 0, 0, 0),
    # EHPAD: office hours (coordinating physician, nurses' day shift).
    SourceKind.EHPAD: (0, 0, 0, 0, 0, 0, 0, 0.2, 1.5, 3.0, 3.5, 3.0,
                       1.5, 2.0, 3.0, 3.0, 2.5, 1.0, 0.2, 0, 0, 0, 0, 0),
    # GP practices: morning and late-afternoon consultations.
    SourceKind.GP: (0, 0, 0, 0, 0, 0, 0, 0.5, 2.0, 3.0, 3.0, 2.5,
                    1.0, 0.5, 1.5, 2.5, 3.0, 3.0, 2.5, 1.5, 0.3, 0, 0, 0),
}

# Main MPP mix: (code, weight).
MPP_MIX: tuple[tuple[str, float], ...] = (
    ("04", 25.0),  # palliative care
    ("03", 20.0),  # IV treatment (antibiotics adapted to the antibiogram)
    ("09", 14.0),  # complex dressings (burns, post-traumatic wounds)
    ("07", 10.0),  # pain: PCA pump, MEOPA, syringe driver
    ("14", 11.0),  # heavy nursing
    ("11", 3.0), ("12", 2.0),  # réadaptation
    ("02", 3.0), ("06", 2.0), ("05", 2.0), ("08", 2.5), ("29", 2.0), ("10", 1.5),
    ("01", 1.0), ("18", 0.7), ("13", 0.5), ("24", 0.3),
    ("19", 0.3), ("21", 0.2),  # ante/post-partum (needs the mention)
    ("22", 0.3),  # newborn at risk (needs the under-3 mention)
)

NEGATIVE_AVIS_RATE = 0.08
NEGATIVE_AVIS_REASONS = (
    (Reason.MEDICAL_NOT_ELIGIBLE, "état clinique non stabilisé, surveillance continue nécessaire", 0.45),
    (Reason.SOCIAL_NOT_ELIGIBLE, "pas d'aidant, logement inadapté", 0.30),
    (Reason.PATIENT_REFUSED, "le patient préfère rester hospitalisé", 0.15),
    (Reason.GP_REFUSED, "médecin traitant non joignable / désaccord", 0.10),
)
WITHIN_24H_RATE = 0.88


def hourly_rates(daily_volume: float, kind: str | None = None) -> list[float]:
    """Expected referrals per hour (0–23) for one source kind, or all kinds when ``kind`` is None.

    Integrates (sums) over the day to ``daily_volume`` × the kind's share (or to ``daily_volume``).
    """
    kinds = [kind] if kind is not None else list(SOURCE_MIX)
    rates = [0.0] * 24
    for k in kinds:
        weights = HOURLY_WEIGHTS[k]
        total = sum(weights)
        for h in range(24):
            rates[h] += daily_volume * SOURCE_MIX[k] * weights[h] / total
    return rates


def intensity(daily_volume: float, local_hour: float) -> float:
    """Arrival intensity (referrals per hour) at a fractional local hour, piecewise constant."""
    return hourly_rates(daily_volume)[int(local_hour) % 24]


def default_daily_volume(population: int) -> float:
    return population / 100_000 * REFERRALS_PER_100K_PER_DAY


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:  # normal approximation for large means
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def day_arrivals(rng: random.Random, local_midnight: datetime, daily_volume: float) -> list[tuple[datetime, str]]:
    """The referral arrivals of one local day: sorted ``(time, source kind)`` pairs.

    A non-homogeneous Poisson process with a piecewise-constant hourly intensity per kind.
    """
    arrivals: list[tuple[datetime, str]] = []
    for kind in SOURCE_MIX:
        for hour, lam in enumerate(hourly_rates(daily_volume, kind)):
            for _ in range(_poisson(rng, lam)):
                arrivals.append((local_midnight + timedelta(hours=hour + rng.random()), str(kind)))
    arrivals.sort(key=lambda a: a[0])
    return arrivals


FAMILY_NAMES = ("MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU", "LAURENT",
                "SIMON", "MICHEL", "LEFEBVRE", "LEROY", "ROUX", "DAVID", "BERTRAND", "MOREL", "FOURNIER", "GIRARD")
GIVEN_NAMES = {"F": ("Jeanne", "Marie", "Yvette", "Simone", "Odette", "Colette", "Paulette", "Huguette", "Lucienne"),
               "M": ("Jean", "Pierre", "Marcel", "Roger", "André", "Robert", "Raymond", "Lucien", "Gaston")}


@dataclass(frozen=True)
class PatientRecord:
    """What the referring hospital knows of its patient: never sent to the platform."""

    family_name: str
    given_name: str
    nir: str  # 13 digits and the 2-digit key
    birth_date: date
    local_id: str = ""  # the referring establishment's own patient number (IPP, PID-3 of type PI)

    @classmethod
    def draw(cls, rng: random.Random, sex: str, birth_year: int, department: str) -> PatientRecord:
        birth = date(birth_year, 1, 1) + timedelta(days=rng.randrange(365))
        place = department if department.isdigit() and len(department) == 2 else "99"
        body = f"{1 if sex == 'M' else 2}{birth.year % 100:02d}{birth.month:02d}{place}{rng.randrange(1, 999):03d}{rng.randrange(1, 999):03d}"
        return cls(rng.choice(FAMILY_NAMES), rng.choice(GIVEN_NAMES[sex]), f"{body}{97 - int(body) % 97:02d}", birth)

    def pseudonym(self, hospital_key: bytes) -> str:
        """The platform's pseudonym format: HMAC-SHA-256 of the NIR under the hospital's own key."""
        return hmac.new(hospital_key, self.nir.encode("ascii"), hashlib.sha256).hexdigest()

    def as_json(self) -> dict[str, str]:
        return {"family_name": self.family_name, "given_name": self.given_name, "nir": self.nir,
                "birth_date": self.birth_date.isoformat(), "local_id": self.local_id}


def own_key_pseudonym(source: SourceSpec, patient: PatientRecord) -> str:
    """A source that shares no key with the platform's gateway: its own key over the NIR."""
    return patient.pseudonym(hashlib.sha256(f"hospital-key:{source.finess}".encode()).digest())


@dataclass
class GeneratedReferral:
    """A referral body and what the simulated world knows about it (not sent)."""

    body: dict[str, Any]
    department: str
    source: SourceSpec
    negative_avis: bool
    palliative: bool
    patient: PatientRecord | None = None

    @property
    def referral_id(self) -> str:
        return self.body["referral_id"]


def _weighted(rng: random.Random, pairs):
    items = [p[0] for p in pairs]
    weights = [p[-1] for p in pairs]
    return rng.choices(items, weights=weights)[0]


class ReferralFactory:
    """Builds realistic referral bodies (``POST /v1/referrals``) for one department."""

    def __init__(self, department: DepartmentScenario, rng: random.Random,
                 identity_sink: Callable[[PatientRecord], None] | None = None,
                 pseudonym_of: Callable[[SourceSpec, PatientRecord], str] | None = None) -> None:
        self.department = department
        self.rng = rng
        self.identity_sink = identity_sink
        # How the source names the patient: by default its own key over the NIR; a hospital that
        # sends ADT the way the HL7 gateway does (doors.py).
        self.pseudonym_of = pseudonym_of or own_key_pseudonym
        self._codes = [c for c, _ in department.communes]
        self._weights = [max(p, 1) for _, p in department.communes]

    def _care_commune(self) -> str:
        return self.rng.choices(self._codes, weights=self._weights)[0]

    def make(self, kind: str, real_now: datetime, sim_now: datetime, speed: float) -> GeneratedReferral:
        """One referral. ``real_now`` stamps the body (the platform's clock is real time); delays
        measured in simulated time are compressed by ``speed``."""
        rng, dept = self.rng, self.department
        kind = str(kind)
        sources = dept.sources_of_kind(kind) or list(dept.hospitals)
        source = rng.choice(sources)
        main = _weighted(rng, MPP_MIX)
        if kind == SourceKind.EHPAD and main in ("19", "21", "22", "29", "11"):
            main = "04"

        # Patient. Ages follow the platform's rules (docs/domain.md): a woman of child-bearing
        # age for 19/21, a child under 3 for 22, counted from the year the hospital's clock is in.
        if main in ("19", "21"):
            birth_year, sex = real_now.year - rng.randint(19, 43), "F"
        elif main == "22":
            birth_year, sex = real_now.year - rng.randint(0, 2), rng.choice(["F", "M"])
        else:
            age = min(104, max(18, round(rng.triangular(35, 102, 84))))
            birth_year, sex = sim_now.year - age, rng.choices(["F", "M"], weights=[55, 45])[0]
        if kind == SourceKind.EHPAD:
            place, ehpad = PlaceOfCare.EHPAD, source
        elif dept.ehpads and rng.random() < 0.07:
            place, ehpad = PlaceOfCare.EHPAD, rng.choice(dept.ehpads)
        else:
            place, ehpad = PlaceOfCare.HOME, None
        care_commune = ehpad.commune if ehpad else self._care_commune()

        # Clinical.
        equipment: set[str] = set()
        associated: list[str] = []
        palliative = main == "04"
        if main == "07":
            equipment.add(rng.choices([Equipment.PCA_PUMP, Equipment.MEOPA, Equipment.SYRINGE_DRIVER], weights=[55, 25, 20])[0])
        elif main == "04":
            if rng.random() < 0.55:
                equipment.add(Equipment.SYRINGE_DRIVER)
            if rng.random() < 0.2:
                equipment.add(Equipment.OXYGEN)
            if rng.random() < 0.12:
                equipment.add(Equipment.PCA_PUMP)
            if rng.random() < 0.35:
                associated.append("07")
        elif main == "03":
            if rng.random() < 0.15:
                equipment.add(Equipment.ISOLATION)  # multi-resistant bacteria
            if rng.random() < 0.1:
                equipment.add(Equipment.SYRINGE_DRIVER)
        elif main == "09" and rng.random() < 0.15:
            equipment.add(Equipment.MEOPA)  # painful dressings
        elif main == "02":
            equipment.add(Equipment.PARENTERAL_NUTRITION)
        elif main == "18":
            equipment.add(Equipment.TRANSFUSION)
        elif main == "01":
            equipment.add(Equipment.OXYGEN)
        if main != "04" and rng.random() < 0.05:
            palliative = True
        for code, p in (("25", 0.2), ("15", 0.12), ("14", 0.1), ("09", 0.05)):
            if code != main and code not in associated and rng.random() < p:
                associated.append(code)
        if main == "14" or "14" in associated or palliative:  # heavy nursing means a dependent patient
            karnofsky = rng.choice((20, 30, 30, 40, 40, 50))
        else:
            karnofsky = rng.choice((40, 50, 50, 60, 60, 70, 80))
        duration = {"04": (10, 45), "03": (7, 21), "09": (14, 45), "07": (5, 20), "14": (21, 60),
                    "11": (14, 42), "12": (21, 60)}.get(main, (5, 30))
        if rng.random() < WITHIN_24H_RATE:
            urgency, planned = Urgency.WITHIN_24H, None
        else:
            urgency, planned = Urgency.PLANNED, (sim_now.date() + timedelta(days=rng.randint(1, 5)))

        # Conditions and avis HAD (given at the ED by the liaison nurse).
        conditions = {
            "patient_consent": rng.random() < 0.97,
            "gp_agreement": rng.random() < 0.92,
            "caregiver_present": place == PlaceOfCare.EHPAD or rng.random() < 0.8,
        }
        negative = rng.random() < NEGATIVE_AVIS_RATE
        avis = None
        if negative:
            reason, text = _weighted(rng, [((r, t), w) for r, t, w in NEGATIVE_AVIS_REASONS])
            avis = {"eligible": False, "reason": str(reason), "text": text}
        elif kind in (SourceKind.ED, SourceKind.UHCD) and rng.random() < 0.6:
            avis = {"eligible": True, "reason": None, "text": "avis HAD favorable (IDE de liaison)"}

        # Times: ED stay before the request, desired admission soon after (compressed by speed).
        ed_arrival = None
        if kind in (SourceKind.ED, SourceKind.UHCD):
            stay_hours = rng.uniform(2, 7) if kind == SourceKind.ED else rng.uniform(10, 24)
            ed_arrival = real_now - timedelta(hours=stay_hours) / speed
        desired = real_now + timedelta(hours=rng.uniform(2, 12)) / speed if urgency == Urgency.WITHIN_24H else None

        unit = {SourceKind.ED: "SAU", SourceKind.UHCD: "UHCD", SourceKind.WARD: rng.choice(["Médecine interne", "Gériatrie aiguë", "Pneumologie"]),
                SourceKind.EHPAD: "Infirmerie", SourceKind.GP: "Cabinet"}[SourceKind(kind)]
        patient = PatientRecord.draw(random.Random(rng.getrandbits(64)), sex, birth_year, dept.code)
        patient = replace(patient, local_id=PatientIdDomain.of(source.finess).local_id(patient.nir))
        if self.identity_sink:
            self.identity_sink(patient)
        body: dict[str, Any] = {
            "referral_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "source": {"kind": kind, "finess": source.finess, "unit": unit,
                       "prescriber_id": f"SIM{rng.randrange(10**6):06d}"},
            "patient": {
                "pseudonym": self.pseudonym_of(source, patient),
                "birth_year": birth_year,
                "sex": sex,
                "care_commune": care_commune,
                "place_of_care": str(place),
                "ehpad_finess": ehpad.finess if ehpad else None,
            },
            "clinical": {
                "main_mpp": main,
                "associated_mpp": associated,
                "karnofsky": karnofsky,
                "equipment": sorted(str(e) for e in equipment),
                "palliative": palliative,
                "urgency": str(urgency),
                "planned_date": planned.isoformat() if isinstance(planned, date) else None,
                "expected_duration_days": rng.randint(*duration),
            },
            "conditions": conditions,
            "ed_arrival_at": ed_arrival.astimezone(UTC).isoformat() if ed_arrival else None,
            "requested_at": real_now.astimezone(UTC).isoformat(),
            "desired_admission_at": desired.astimezone(UTC).isoformat() if desired else None,
            "avis": avis,
        }
        return GeneratedReferral(body=body, department=dept.code, source=source, negative_avis=negative, palliative=palliative,
                                 patient=patient)
