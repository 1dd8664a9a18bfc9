"""Checks several services apply to what callers send: real departments, timestamps that are
not in the future."""

from __future__ import annotations

from datetime import datetime, timedelta

from reflexe_common.errors import ApiError
from reflexe_common.geography import Geography, is_department_code

# Clocks of hospital and HAD systems drift; beyond this a timestamp "from the future" is an error.
CLOCK_SKEW = timedelta(minutes=5)


def is_department(code: str) -> bool:
    """A department of the official geography: metropolitan ones and 971–974, 976 — not the
    overseas collectivities (975, 977, 978, 98x) the COG data also lists."""
    return is_department_code(code) and Geography.load().department(code) is not None


def require_department(code: str) -> None:
    """For a department named in a path: an unknown one is a resource that does not exist."""
    if not is_department(code):
        raise ApiError(404, "UNKNOWN_DEPARTMENT", f"no department {code!r}",
                       [{"field": "path.department", "message": f"unknown department {code!r}"}])


def in_the_future(at: datetime, now: datetime, skew: timedelta = CLOCK_SKEW) -> bool:
    return at > now + skew
