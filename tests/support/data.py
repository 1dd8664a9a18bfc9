"""Request bodies for tests: realistic, pseudonymous, with real INSEE codes."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from reflexe_common.finess import with_key

MONTPELLIER = "34172"
SETE = "34301"
TOULOUSE = "31555"
_counter = itertools.count(1)


_finess_base = uuid.uuid4().int


def unique_finess(department: str = "34") -> str:
    """A valid (check key included), fictional FINESS, unique within the test run: a random start
    (so that two runs against the same database differ) then a sequence."""
    width = 8 - len(department)
    return with_key(f"{department}{(_finess_base + next(_counter)) % 10**width:0{width}d}")


def with_wrong_key(finess: str) -> str:
    """The FINESS with its 9th character (the Luhn key) changed: its shape right, its key wrong."""
    return finess[:8] + str((int(finess[8]) + 1) % 10)


def pseudonym(seed: str | None = None) -> str:
    """A pseudonym in the platform's one format (docs/privacy.md): 64 lowercase hex, a SHA-256 digest."""
    return hashlib.sha256((seed or uuid.uuid4().hex).encode()).hexdigest()


def referral_body(source_finess: str, commune: str = MONTPELLIER, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "referral_id": str(uuid.uuid4()),
        "source": {"kind": "ED", "finess": source_finess, "unit": "SAU", "prescriber_id": "10001234567"},
        "patient": {"pseudonym": pseudonym(), "birth_year": 1941, "sex": "F", "care_commune": commune,
                    "place_of_care": "HOME", "ehpad_finess": None},
        "clinical": {"main_mpp": "03", "associated_mpp": ["09"], "karnofsky": 50, "equipment": ["SYRINGE_DRIVER"],
                     "palliative": False, "urgency": "WITHIN_24H", "planned_date": None, "expected_duration_days": 10},
        "conditions": {"patient_consent": True, "gp_agreement": True, "caregiver_present": True},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def had_body(name: str, communes: list[str], department: str = "34", places: int = 40, **overrides: Any) -> dict[str, Any]:
    return {
        "name": name, "departments": [department], "mentions": [], "mpp_supported": ["03", "04", "07", "09", "14"],
        "equipment": ["SYRINGE_DRIVER", "PCA_PUMP", "OXYGEN"], "zone_communes": communes, "ehpad_conventions": [],
        "authorised_places": places, **overrides,
    }


def full_referral_body(source_finess: str, commune: str = MONTPELLIER) -> dict[str, Any]:
    """A referral with every optional field of the data set filled (an EHPAD resident, a planned
    admission, an avis), each value recognisable, for the tests of what its views show."""
    now = datetime.now(UTC)
    return referral_body(
        source_finess, commune,
        source={"kind": "EHPAD", "unit": "Unité protégée", "prescriber_id": "10009876543"},
        patient={"birth_year": 1936, "sex": "M", "place_of_care": "EHPAD", "ehpad_finess": unique_finess()},
        clinical={"main_mpp": "04", "associated_mpp": ["09", "25"], "karnofsky": 30, "equipment": ["OXYGEN", "PCA_PUMP"],
                  "palliative": True, "urgency": "PLANNED", "planned_date": (now + timedelta(days=3)).date().isoformat(),
                  "expected_duration_days": 23},
        conditions={"patient_consent": True, "gp_agreement": True, "caregiver_present": False},
        ed_arrival_at=(now - timedelta(hours=3, minutes=20)).isoformat(),
        desired_admission_at=(now + timedelta(days=2, hours=5)).replace(minute=0, second=0, microsecond=0).isoformat(),
        avis={"eligible": True, "reason": None, "text": "Avis favorable, équipe de liaison"},
    )
