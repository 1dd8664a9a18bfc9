"""The FINESS number of an establishment, checked wherever one enters the platform.

A FINESS is 9 characters: the department (2 characters: 01–95, 2A and 2B in Corsica, 97 then a
digit overseas), 6 characters, and a check key, the 9th, which is the Luhn key of the first eight
(750712184, 340780477, 310781406 are real ones). Hand-typed numbers get one digit wrong or two
swapped; the key catches that before an offer goes to the wrong establishment.

Corsica: the key is computed with the letter read as its rank in the alphabet, 2A as 21 and 2B
as 22 (the convention of public French validators, e.g. the Plateforme de l'inclusion's). No
official specification of the key for Corsican numbers was found; the choice is made once, here.
A and B are accepted only as the second character after a 2; everything else is a digit.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

FINESS_SHAPE = re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{7}")
FINESS_DESCRIPTION = ("FINESS number: 9 characters, the department (2A/2B in Corsica) then digits; the 9th is "
                      "the Luhn key of the first eight (docs/domain.md)")
FINESS_PROBLEM = "not a FINESS: 9 characters (2A/2B for Corsica, digits otherwise) whose 9th is the Luhn key of the first eight"
_CORSICA = {"2A": "21", "2B": "22"}


def _digits(first_eight: str) -> str:
    return _CORSICA.get(first_eight[:2], first_eight[:2]) + first_eight[2:]


def finess_key(first_eight: str) -> str:
    """The check key (9th character) of a FINESS whose first eight characters are given."""
    if not re.fullmatch(r"(?:[0-9]{2}|2[AB])[0-9]{6}", first_eight):
        raise ValueError(f"{first_eight!r} is not the first eight characters of a FINESS")
    total = 0
    # Luhn: from the right of the complete number the key is position 1, so the payload's
    # rightmost digit is doubled, then every other one.
    for position, char in enumerate(reversed(_digits(first_eight))):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def is_finess(value: object) -> bool:
    return isinstance(value, str) and FINESS_SHAPE.fullmatch(value) is not None and finess_key(value[:8]) == value[8]


def with_key(first_eight: str) -> str:
    """The complete FINESS: the first eight characters and their key."""
    return first_eight + finess_key(first_eight)


def check_finess(value: str) -> str:
    if not is_finess(value):
        raise ValueError(FINESS_PROBLEM)
    return value


# A schema field holding a FINESS: `finess: Finess` (a 422 naming the field when it is not one).
FINESS_PATTERN = r"^(?:[0-9]{2}|2[AB])[0-9]{7}$"
Finess = Annotated[str, Field(pattern=FINESS_PATTERN, description=FINESS_DESCRIPTION, examples=["340780477"]),
                   AfterValidator(check_finess)]
