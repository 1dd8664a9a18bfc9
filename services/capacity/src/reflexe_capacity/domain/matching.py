"""Matching a referral to the HAD that should receive the next offer (docs/domain.md, "Capacity and matching").

``match`` is a pure function: the same request, candidates (in any order), time and staleness
threshold always give the same decision, which is how replaying events reproduces decisions.

Each candidate HAD goes through the hard filters in the order of ``ExclusionRule``; the first
failing rule excludes it, so every HAD passed in appears exactly once, either ranked or excluded.
The eligible ones are ranked by (EHPAD convention first, fresh declaration before stale, most
live places relative to size, shortest median response time with unknown last, FINESS).

``desk_offer`` is for the coordination desk choosing an HAD by hand: only the capacity rules
apply. Zone, department, mention, MPP and equipment are clinical and organisational judgements
the desk may override (a neighbouring HAD that agreed on the phone to cover a commune, a
registry out of date) and for which it takes responsibility. Capacity is never overridden:
an offer without a live place would be a double booking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any

from reflexe_common.ages import PossibleAges
from reflexe_common.labels import CAPACITY_STATUS_FR, MENTION_FR, duration_fr
from reflexe_common.vocabulary import (
    MENTION_REQUIRED_BY_MPP,
    UNDER_3_YEARS,
    CapacityStatus,
    Equipment,
    Mention,
    PlaceOfCare,
    Urgency,
)

from .capacity import HadLedger
from .registry import HadEstablishment


class ExclusionRule(StrEnum):
    """Hard filters, in the order they are checked."""

    ALREADY_TRIED = "ALREADY_TRIED"
    OUT_OF_DEPARTMENT = "OUT_OF_DEPARTMENT"
    OUT_OF_ZONE = "OUT_OF_ZONE"
    MENTION_MISSING = "MENTION_MISSING"
    MPP_NOT_SUPPORTED = "MPP_NOT_SUPPORTED"
    EQUIPMENT_NOT_SUPPORTED = "EQUIPMENT_NOT_SUPPORTED"
    NO_DECLARATION = "NO_DECLARATION"
    NOT_OPEN = "NOT_OPEN"
    NO_LIVE_PLACE = "NO_LIVE_PLACE"
    NO_ADMISSION_TODAY = "NO_ADMISSION_TODAY"


@dataclass(frozen=True, slots=True)
class MatchRequest:
    referral_id: str
    department: str  # of the care commune
    care_commune: str  # INSEE code
    place_of_care: PlaceOfCare
    ehpad_finess: str | None
    main_mpp: str
    associated_mpp: tuple[str, ...]
    equipment: frozenset[Equipment]
    patient_birth_year: int
    requested_on: date  # the day the patient's possible ages are taken on
    urgency: Urgency
    departments: frozenset[str] = frozenset()  # own + widened by the desk
    excluded_hads: frozenset[str] = frozenset()  # already tried

    @property
    def search_departments(self) -> frozenset[str]:
        return self.departments | {self.department}

    def required_mentions(self) -> frozenset[Mention]:
        required = {
            MENTION_REQUIRED_BY_MPP[mpp]
            for mpp in (self.main_mpp, *self.associated_mpp)
            if mpp in MENTION_REQUIRED_BY_MPP
        }
        # Conservative: with a birth year only, a child who may still be under 3 needs an HAD
        # holding the mention (a 3-year-old offered to it loses nothing; a 2-year-old offered
        # to an HAD without it would get care it is not authorised for).
        if PossibleAges.on(self.patient_birth_year, self.requested_on).may_be_under(UNDER_3_YEARS):
            required.add(Mention.ENFANTS_MOINS_3_ANS)
        return frozenset(required)


@dataclass(frozen=True, slots=True)
class Candidate:
    had: HadEstablishment
    ledger: HadLedger
    median_response_seconds: float | None = None  # recent offers' answer time; None = unknown


@dataclass(frozen=True, slots=True)
class Exclusion:
    had_finess: str
    rule: ExclusionRule
    detail: str  # French, for the desk
    had_name: str = ""


@dataclass(frozen=True, slots=True)
class RankedHad:
    """An eligible HAD with the values its rank was computed from."""

    had_finess: str
    had_name: str
    ehpad_convention: bool
    fresh: bool
    declared_at: datetime
    live_places: int
    authorised_places: int
    median_response_seconds: float | None

    @property
    def sort_key(self) -> tuple[Any, ...]:
        return (
            not self.ehpad_convention,
            not self.fresh,
            -Fraction(self.live_places, self.authorised_places),  # exact: no float ties
            (self.median_response_seconds is None, self.median_response_seconds or 0.0),
            self.had_finess,
        )

    def reasons_fr(self, now: datetime) -> str:
        parts = []
        if self.ehpad_convention:
            parts.append("convention EHPAD")
        if self.fresh:
            parts.append("déclaration fraîche")
        else:
            parts.append(f"déclaration ancienne ({_age_fr(now - self.declared_at)})")
        parts.append(f"{self.live_places}/{self.authorised_places} places libres")
        if self.median_response_seconds is None:
            parts.append("délai de réponse inconnu")
        else:
            parts.append(f"réponse médiane {duration_fr(self.median_response_seconds)}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class MatchDecision:
    referral_id: str
    decided_at: datetime
    chosen: str | None
    ranked: tuple[RankedHad, ...]
    excluded: tuple[Exclusion, ...]

    def explain(self) -> str:
        """Short French summary for the coordination desk."""
        if self.ranked:
            first = self.ranked[0]
            text = (
                f"Proposé à {first.had_name} ({first.had_finess}) : "
                f"{first.reasons_fr(self.decided_at)}"
            )
            if len(self.ranked) > 1:
                text += "; ensuite : " + ", ".join(r.had_name for r in self.ranked[1:])
        else:
            text = "Aucune HAD disponible : à traiter par le bureau de coordination"
        if self.excluded:
            text += "; exclus : " + ", ".join(f"{e.had_name} ({e.detail})" for e in self.excluded)
        return text + "."

    def as_dict(self) -> dict[str, Any]:
        return {
            "referral_id": self.referral_id,
            "decided_at": self.decided_at.isoformat(),
            "chosen": self.chosen,
            "ranked": [
                {
                    "rank": rank,
                    "had_finess": r.had_finess,
                    "had_name": r.had_name,
                    "ehpad_convention": r.ehpad_convention,
                    "fresh": r.fresh,
                    "declared_at": r.declared_at.isoformat(),
                    "live_places": r.live_places,
                    "authorised_places": r.authorised_places,
                    "median_response_seconds": r.median_response_seconds,
                }
                for rank, r in enumerate(self.ranked, start=1)
            ],
            "excluded": [
                {"had_finess": e.had_finess, "had_name": e.had_name, "rule": str(e.rule), "detail": e.detail}
                for e in self.excluded
            ],
            "explanation": self.explain(),
        }


def match(
    request: MatchRequest,
    candidates: Iterable[Candidate],
    now: datetime,
    stale_after: timedelta,
) -> MatchDecision:
    ranked: list[RankedHad] = []
    excluded: list[Exclusion] = []
    for candidate in _unique_by_finess(candidates):
        exclusion = _first_failing_rule(request, candidate, now)
        if exclusion is None:
            ranked.append(_ranked(request, candidate, now, stale_after))
        else:
            excluded.append(exclusion)
    return _decision(request, now, ranked, excluded)


def desk_offer(
    request: MatchRequest, candidate: Candidate, now: datetime, stale_after: timedelta
) -> MatchDecision:
    """The desk chose this HAD: only capacity can refuse it (see the module docstring).

    ``stale_after`` is needed because staleness is shown everywhere, the desk included.
    """
    exclusion = _capacity_exclusion(candidate)
    if exclusion is None:
        return _decision(request, now, [_ranked(request, candidate, now, stale_after)], [])
    return _decision(request, now, [], [exclusion])


# ---- rules ---------------------------------------------------------------------------------


def _first_failing_rule(request: MatchRequest, candidate: Candidate, now: datetime) -> Exclusion | None:
    had = candidate.had

    def excluded(rule: ExclusionRule, detail: str) -> Exclusion:
        return Exclusion(had.finess, rule, detail, had.name)

    if had.finess in request.excluded_hads:
        return excluded(ExclusionRule.ALREADY_TRIED, "déjà sollicitée")
    if not had.departments & request.search_departments:
        return excluded(ExclusionRule.OUT_OF_DEPARTMENT, "hors département")
    if request.care_commune not in had.zone_communes:
        return excluded(ExclusionRule.OUT_OF_ZONE, "hors zone")
    missing_mentions = sorted(m for m in request.required_mentions() if not had.holds_mention(m))
    if missing_mentions:
        labels = ", ".join(MENTION_FR[m] for m in missing_mentions)
        return excluded(ExclusionRule.MENTION_MISSING, f"mention manquante : {labels}")
    unsupported_mpp = sorted({request.main_mpp, *request.associated_mpp} - had.mpp_supported)
    if unsupported_mpp:
        return excluded(
            ExclusionRule.MPP_NOT_SUPPORTED, f"MPP non pris en charge : {', '.join(unsupported_mpp)}"
        )
    missing_equipment = sorted(request.equipment - had.equipment)
    if missing_equipment:
        return excluded(
            ExclusionRule.EQUIPMENT_NOT_SUPPORTED,
            f"équipement non disponible : {', '.join(missing_equipment)}",
        )
    capacity = _capacity_exclusion(candidate)
    if capacity is not None:
        return capacity
    if request.urgency is Urgency.WITHIN_24H and candidate.ledger.admissions_today_left(now) == 0:
        return excluded(ExclusionRule.NO_ADMISSION_TODAY, "plus d'admission possible aujourd'hui")
    return None


def _capacity_exclusion(candidate: Candidate) -> Exclusion | None:
    had, ledger = candidate.had, candidate.ledger
    declaration = ledger.declaration
    if declaration is None:
        return Exclusion(had.finess, ExclusionRule.NO_DECLARATION, "aucune déclaration de capacité", had.name)
    if declaration.status is not CapacityStatus.OPEN:
        return Exclusion(had.finess, ExclusionRule.NOT_OPEN, CAPACITY_STATUS_FR[declaration.status].lower(), had.name)
    if ledger.live_places() == 0:
        return Exclusion(had.finess, ExclusionRule.NO_LIVE_PLACE, "aucune place libre", had.name)
    return None


def _ranked(request: MatchRequest, candidate: Candidate, now: datetime, stale_after: timedelta) -> RankedHad:
    had, ledger = candidate.had, candidate.ledger
    assert ledger.declaration is not None  # capacity rules passed
    return RankedHad(
        had_finess=had.finess,
        had_name=had.name,
        ehpad_convention=(
            request.place_of_care is PlaceOfCare.EHPAD
            and request.ehpad_finess is not None
            and request.ehpad_finess in had.ehpad_conventions
        ),
        fresh=not ledger.is_stale(now, stale_after),
        declared_at=ledger.declaration.declared_at,
        live_places=ledger.live_places(),
        authorised_places=had.authorised_places,
        median_response_seconds=candidate.median_response_seconds,
    )


def _decision(
    request: MatchRequest, now: datetime, ranked: list[RankedHad], excluded: list[Exclusion]
) -> MatchDecision:
    ranked.sort(key=lambda r: r.sort_key)
    excluded.sort(key=lambda e: e.had_finess)  # input order must not show through
    return MatchDecision(
        referral_id=request.referral_id,
        decided_at=now,
        chosen=ranked[0].had_finess if ranked else None,
        ranked=tuple(ranked),
        excluded=tuple(excluded),
    )


def _unique_by_finess(candidates: Iterable[Candidate]) -> list[Candidate]:
    seen: set[str] = set()
    unique = []
    for candidate in candidates:
        if candidate.had.finess in seen:
            raise ValueError(f"HAD {candidate.had.finess} passed twice to match")
        if candidate.had.finess != candidate.ledger.had_finess:
            raise ValueError(f"HAD {candidate.had.finess} paired with the ledger of {candidate.ledger.had_finess}")
        seen.add(candidate.had.finess)
        unique.append(candidate)
    return unique


# ---- French rendering ----------------------------------------------------------------------


def _age_fr(age: timedelta) -> str:
    return f"il y a {duration_fr(age.total_seconds())}"
