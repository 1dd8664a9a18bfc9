"""FHIR resources for tests: a referral as a ServiceRequest (docs/integration-fhir.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from reflexe_referral.entrypoints import fhir_mapping as fm
from tests.support.data import pseudonym


def service_request_resource(hospital: str, referral_id: str | None = None, **changes) -> dict:
    resource = {
        "resourceType": "ServiceRequest",
        "contained": [{"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "1941",
                       "identifier": [{"system": fm.PSEUDONYM_SYSTEM, "value": pseudonym()}]}],
        "extension": [
            {"url": fm.EXT_URGENCY, "valueCode": "WITHIN_24H"},
            {"url": fm.EXT_KARNOFSKY, "valueInteger": 50},
            {"url": fm.EXT_SOURCE_KIND, "valueCode": "ED"},
            {"url": fm.EXT_SOURCE_UNIT, "valueString": "SAU"},
            {"url": fm.EXT_CARE_COMMUNE, "valueCode": "34172"},
            {"url": fm.EXT_PATIENT_CONSENT, "valueBoolean": True},
            {"url": fm.EXT_GP_AGREEMENT, "valueBoolean": True},
            {"url": fm.EXT_CAREGIVER, "valueBoolean": True},
            {"url": fm.EXT_AVIS, "extension": [{"url": "eligible", "valueBoolean": True},
                                               {"url": "text", "valueString": "domicile adapté"}]},
        ],
        "identifier": [{"system": fm.REFERRAL_ID_SYSTEM, "value": referral_id or str(uuid.uuid4())}],
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "code": {"coding": [{"system": fm.MPP_SYSTEM, "code": "03"}]},
        "orderDetail": [{"coding": [{"system": fm.MPP_SYSTEM, "code": "09"}]},
                        {"coding": [{"system": fm.EQUIPMENT_SYSTEM, "code": "SYRINGE_DRIVER"}]}],
        "subject": {"reference": "#p"},
        # Now: a referral requested over 24 h ago would soon be marked overdue by its clock.
        "authoredOn": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "requester": {"type": "Organization", "identifier": {"system": fm.FINESS_SYSTEM, "value": hospital}},
    }
    resource.update(changes)
    return resource
