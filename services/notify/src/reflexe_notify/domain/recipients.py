"""Who a webhook is addressed to: `had:<finess>`, `desk:<department>` or `hospital:<finess>`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from reflexe_common.finess import is_finess


class RecipientKind(StrEnum):
    HAD = "had"
    DESK = "desk"
    HOSPITAL = "hospital"


_SCOPE = {
    RecipientKind.HAD: is_finess,
    RecipientKind.HOSPITAL: is_finess,
    RecipientKind.DESK: re.compile(r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-6])$").match,
}


@dataclass(frozen=True, order=True)
class Recipient:
    kind: RecipientKind
    scope: str  # a FINESS for an HAD or a hospital, a department code for a desk

    def __post_init__(self) -> None:
        if not _SCOPE[self.kind](self.scope):
            raise ValueError(f"invalid {self.kind} scope {self.scope!r}")

    def __str__(self) -> str:
        return f"{self.kind}:{self.scope}"

    @classmethod
    def parse(cls, text: str) -> Recipient:
        kind, sep, scope = text.partition(":")
        if not sep:
            raise ValueError(f"a recipient is 'kind:scope', got {text!r}")
        try:
            return cls(RecipientKind(kind), scope)
        except ValueError as exc:
            raise ValueError(f"invalid recipient {text!r}: {exc}") from exc

    @classmethod
    def had(cls, finess: str) -> Recipient:
        return cls(RecipientKind.HAD, finess)

    @classmethod
    def desk(cls, department: str) -> Recipient:
        return cls(RecipientKind.DESK, department)

    @classmethod
    def hospital(cls, finess: str) -> Recipient:
        return cls(RecipientKind.HOSPITAL, finess)
