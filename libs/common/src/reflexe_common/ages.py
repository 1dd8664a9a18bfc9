"""A patient's age as far as the platform can know it: from a birth year only.

A referral carries the birth year, never the birth date (docs/privacy.md), so on a given day a
patient born in year B is either (year − B − 1) or (year − B) years old, depending on a birthday
the platform does not know. Every age rule says which end it uses and why; year minus birth
year alone would make a two-year-old count as three.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class PossibleAges:
    """The ages a patient born in `birth_year` may have on a day: youngest and oldest."""

    youngest: int
    oldest: int

    @classmethod
    def on(cls, birth_year: int, day: date) -> PossibleAges:
        oldest = day.year - birth_year  # the birthday has passed this year
        return cls(youngest=max(0, oldest - 1), oldest=max(0, oldest))

    def may_be_under(self, years: int) -> bool:
        return self.youngest < years

    def surely_under(self, years: int) -> bool:
        return self.oldest < years

    def may_be_within(self, low: int, high: int) -> bool:
        """Whether some possible age lies in [low, high]."""
        return self.youngest <= high and self.oldest >= low

    def __str__(self) -> str:
        return f"{self.youngest}" if self.youngest == self.oldest else f"{self.youngest} or {self.oldest}"
