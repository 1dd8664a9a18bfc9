"""The HAD registry: what an establishment is authorised and equipped to do, and where.

Reference data, changed rarely and by hand (ARS authorisations, partnership conventions);
live capacity is in `capacity.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from reflexe_common.vocabulary import MENTION_REQUIRED_BY_MPP, MPP_CODES, Equipment, Mention

Problem = tuple[str, str]  # (field path, message)
MPP_LIST = "two digits from the PMSI-HAD list: " + ", ".join(sorted(MPP_CODES))


def authorisation_problems(mentions: Iterable[Mention], mpp_supported: Sequence[str]) -> list[Problem]:
    """What an HAD's registry entry claims that it cannot: an MPP code that does not exist (a "3"
    for "03" would never match a referral, silently) or one whose mention it does not hold."""
    held = {Mention.SOCLE, *mentions}
    problems: list[Problem] = []
    for i, code in enumerate(mpp_supported):
        path = f"mpp_supported[{i}]"
        if code not in MPP_CODES:
            problems.append((path, f"unknown MPP code {code!r}: {MPP_LIST}"))
        elif (needed := MENTION_REQUIRED_BY_MPP.get(code)) is not None and needed not in held:
            problems.append((path, f"MPP {code} needs the mention {needed} in mentions"))
    return problems


@dataclass(frozen=True, slots=True)
class Contacts:
    """Where offers are pushed: the HAD's information system, or its coordination mailbox."""

    webhook_url: str | None = None
    email: str | None = None  # MSSanté address in production


@dataclass(frozen=True, slots=True)
class HadEstablishment:
    finess: str
    name: str
    departments: frozenset[str]
    mentions: frozenset[Mention]
    mpp_supported: frozenset[str]
    equipment: frozenset[Equipment]
    zone_communes: frozenset[str]  # INSEE codes of the communes it serves
    ehpad_conventions: frozenset[str] = frozenset()  # FINESS of partner EHPADs
    authorised_places: int = 1  # its size: "free places relative to its size" divides by this
    contacts: Contacts = field(default_factory=Contacts)

    def __post_init__(self) -> None:
        if self.authorised_places < 1:
            raise ValueError(f"HAD {self.finess}: authorised_places must be >= 1")

    def holds_mention(self, mention: Mention) -> bool:
        # Every authorised HAD holds the socle mention, listed or not.
        return mention is Mention.SOCLE or mention in self.mentions
