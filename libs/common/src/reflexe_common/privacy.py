"""No direct identifier enters the platform (see docs/privacy.md).

- A patient is named by a pseudonym of one format only: 64 lowercase hexadecimal characters,
  the SHA-256 digest (in practice an HMAC-SHA-256 under a key the source keeps) that the
  source computes. Anything else (a name, an INS, a shorter hash) is refused.
- Free text (reasons, notes, unit names) must not carry what looks like a NIR/INS or a full
  date: `find_direct_identifier` says what it found, `FreeText` refuses it in a schema with a
  422 naming the field.

The detector is deliberately broad: a false alarm costs a user one rewording, a miss puts a
patient's identity in events, logs and tables that are kept for years.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

PSEUDONYM_PATTERN = r"^[0-9a-f]{64}$"
PSEUDONYM_DESCRIPTION = ("the patient's pseudonym computed by the source: exactly 64 lowercase hexadecimal "
                         "characters, the SHA-256 digest (an HMAC-SHA-256 under the source's own key) of its "
                         "patient identifier; never a name, an INS or a birth date (see docs/privacy.md)")
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)


def is_pseudonym(value: str) -> bool:
    return isinstance(value, str) and _PSEUDONYM.fullmatch(value) is not None


Pseudonym = Annotated[str, Field(pattern=PSEUDONYM_PATTERN, description=PSEUDONYM_DESCRIPTION)]

# NIR / INS: sex 1, 2 (or 7, 8 for a provisional number), year, month, department (2A/2B in
# Corsica), commune, order number: 13 characters, then an optional 2-digit key; written with or
# without separators between groups.
_SEP = r"[ .\-\u00a0]?"
_NIR = re.compile(
    rf"(?<![0-9A-Za-z])[1278]{_SEP}[0-9]{{2}}{_SEP}[0-9]{{2}}{_SEP}(?:[0-9]{{2}}|2[AaBb]){_SEP}"
    rf"[0-9]{{3}}{_SEP}[0-9]{{3}}(?:{_SEP}[0-9]{{2}})?(?![0-9])")
# Any 13 or 15 digit run starting like a NIR, whatever its grouping (e.g. "1440 3341 7200 5").
_DIGITS = re.compile(r"[0-9](?:[ .\-\u00a0]?[0-9])+")

_DAY = r"(?:0?[1-9]|[12][0-9]|3[01])"
_MONTH = r"(?:0?[1-9]|1[0-2])"
_YEAR4 = r"(?:1[89][0-9]{2}|20[0-9]{2})"
_MONTH_NAMES = (r"janv(?:ier|\.)?|f[ée]vr(?:ier|\.)?|mars|avr(?:il|\.)?|mai|juin|juil(?:let|\.)?|ao[uû]t|"
                r"sept(?:embre|\.)?|oct(?:obre|\.)?|nov(?:embre|\.)?|d[ée]c(?:embre|\.)?|"
                r"january|february|march|april|may|june|july|august|september|october|november|december")
_DATES = [
    re.compile(rf"(?<![0-9]){_DAY}\s?[/.\-]\s?{_MONTH}\s?[/.\-]\s?(?:{_YEAR4}|[0-9]{{2}})(?![0-9])"),  # 12/03/1944, 12-3-44
    re.compile(rf"(?<![0-9]){_YEAR4}\s?[/.\-]\s?{_MONTH}\s?[/.\-]\s?{_DAY}(?![0-9])"),  # 1944-03-12
    re.compile(rf"(?<![0-9])(?:{_DAY}|1er)\s*(?:{_MONTH_NAMES})\s*,?\s*{_YEAR4}(?![0-9])", re.IGNORECASE),  # 12 mars 1944
    re.compile(rf"\b(?:{_MONTH_NAMES})\s+{_DAY}(?:st|nd|rd|th)?,?\s+{_YEAR4}(?![0-9])", re.IGNORECASE),  # March 12, 1944
]


def find_direct_identifier(text: str) -> str | None:
    """What in `text` looks like a direct identifier ("a NIR/INS", "a full date"), or None."""
    if _NIR.search(text):
        return "a NIR/INS"
    for run in _DIGITS.finditer(text):
        digits = re.sub(r"[^0-9]", "", run.group())
        if len(digits) in (13, 15) and digits[0] in "1278":
            return "a NIR/INS"
    for pattern in _DATES:
        if pattern.search(text):
            return "a full date (a birth date identifies a patient)"
    return None


def refuse_direct_identifiers(text: str) -> str:
    found = find_direct_identifier(text)
    if found:
        raise ValueError(f"free text must not contain what looks like {found}; write a delay or a year instead")
    return text


# A schema's free-text field: `text: FreeText = Field("", max_length=2000)`.
FreeText = Annotated[str, AfterValidator(refuse_direct_identifiers)]
