"""Why a decision on a referral was refused.

Refusals are expected (two HADs racing, a late click after the hold expired) and carry a
machine-readable code the API maps to a response. A history that cannot be folded is a
bug, not a refusal, hence a separate exception.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_REQUEST = "INVALID_REQUEST"
    ALREADY_CLOSED = "ALREADY_CLOSED"
    INVALID_STATE = "INVALID_STATE"
    NO_CURRENT_OFFER = "NO_CURRENT_OFFER"
    OFFER_SUPERSEDED = "OFFER_SUPERSEDED"
    NOT_ADDRESSED_TO_CALLER = "NOT_ADDRESSED_TO_CALLER"
    OFFER_EXPIRED = "OFFER_EXPIRED"
    OFFER_PENDING = "OFFER_PENDING"
    NOT_ACCEPTED = "NOT_ACCEPTED"
    NOT_ADMITTED = "NOT_ADMITTED"
    NO_NEW_DEPARTMENT = "NO_NEW_DEPARTMENT"
    STALE_VERSION = "STALE_VERSION"
    CONDITION_WITHDRAWN = "CONDITION_WITHDRAWN"
    CONDITIONS_MISSING = "CONDITIONS_MISSING"
    EVALUATION_PENDING = "EVALUATION_PENDING"
    NO_PENDING_EVALUATION = "NO_PENDING_EVALUATION"


class IllegalTransition(Exception):
    """A decision the rules refuse; nothing was changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class InvalidRequest(IllegalTransition):
    """The request breaks a domain rule; `problems` lists (field_path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(
            ErrorCode.INVALID_REQUEST, "; ".join(f"{path}: {msg}" for path, msg in problems)
        )
        self.problems = problems


class StaleVersion(IllegalTransition):
    """The caller decided on a version of the referral that is no longer the current one."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(ErrorCode.STALE_VERSION,
                         f"the referral is at version {current}, not {expected}: read it again")
        self.expected = expected
        self.current = current


class InconsistentHistory(Exception):
    """An event does not fit the state it is applied to: the stored history is corrupt."""
