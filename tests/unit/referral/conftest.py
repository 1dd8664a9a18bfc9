"""The request builder shared by the referral domain tests.

Exposed as a session-scoped fixture (pure function, no state) so hypothesis tests can use
it too; importing from a conftest module is not reliable under pytest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from reflexe_common.vocabulary import Equipment, PlaceOfCare, Sex, SourceKind, Urgency
from reflexe_referral.domain import AvisHad, Clinical, Conditions, Patient, ReferralRequest, Source

REQUESTED_AT = datetime(2025, 3, 10, 14, 0, tzinfo=UTC)


def make_request(**overrides: Any) -> ReferralRequest:
    """A valid WITHIN_24H request from a Montpellier ED, for a palliative patient at home.

    `field=value` replaces a top-level field; `section__field=value` replaces a field of
    source, patient, clinical or conditions (e.g. `patient__birth_year=1850`).
    """
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = defaultdict(dict)
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            nested[section][name] = value
        else:
            top[key] = value
    request = ReferralRequest(
        referral_id="0b6f2c1e-6d3a-4d38-9a43-2f8f4d1c9e01",
        department="34",
        source=Source(kind=SourceKind.ED, finess="340780477", unit="SAU", prescriber_id="p-1"),
        patient=Patient(
            pseudonym="7f3a9c" + "0" * 58,  # the one pseudonym format: 64 lowercase hex
            birth_year=1941,
            sex=Sex.F,
            care_commune="34172",
            place_of_care=PlaceOfCare.HOME,
            ehpad_finess=None,
        ),
        clinical=Clinical(
            main_mpp="04",
            associated_mpp=("07",),
            karnofsky=40,
            equipment=frozenset({Equipment.SYRINGE_DRIVER}),
            palliative=True,
            urgency=Urgency.WITHIN_24H,
            planned_date=None,
            expected_duration_days=14,
        ),
        conditions=Conditions(patient_consent=True, gp_agreement=True, caregiver_present=True),
        ed_arrival_at=REQUESTED_AT.replace(hour=9),
        requested_at=REQUESTED_AT,
        desired_admission_at=None,
        avis=None,
    )
    request = replace(request, **top)
    for section, fields in nested.items():
        request = replace(request, **{section: replace(getattr(request, section), **fields)})
    return request


def make_full_request() -> ReferralRequest:
    """Every optional field filled, each with a value found nowhere else in the request; complete (its
    consents given), so that it is searched and offered."""
    return make_request(
        source__kind=SourceKind.EHPAD, source__unit="Unité Alzheimer", source__prescriber_id="10101010101",
        patient__sex=Sex.M, patient__birth_year=1937, patient__place_of_care=PlaceOfCare.EHPAD,
        patient__ehpad_finess="340011113",
        clinical__main_mpp="03", clinical__associated_mpp=("09", "25"), clinical__karnofsky=30,
        clinical__equipment=frozenset({Equipment.OXYGEN, Equipment.PCA_PUMP}), clinical__palliative=False,
        clinical__urgency=Urgency.PLANNED, clinical__planned_date=date(2025, 3, 13), clinical__expected_duration_days=21,
        conditions__patient_consent=True, conditions__gp_agreement=True, conditions__caregiver_present=False,
        desired_admission_at=REQUESTED_AT + timedelta(days=2, hours=1),
        avis=AvisHad(eligible=True, reason=None, text="Avis favorable de l'IDE de liaison"),
    )


@pytest.fixture(name="make_request", scope="session")
def make_request_fixture() -> Callable[..., ReferralRequest]:
    return make_request
