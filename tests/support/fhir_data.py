"""FHIR resources for tests: a referral as a ServiceRequest, an HAD's capacity as a HealthcareService
(docs/integration-fhir.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from reflexe_capacity.entrypoints import fhir_mapping as cm
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


def healthcare_service_declaration(had: str, places: int = 5, admissions: int = 3, status: str = "OPEN",
                                   declared_at: str | None = None) -> dict:
    """An HAD's capacity declaration as a HealthcareService (docs/integration-fhir.md, "HAD capacity")."""
    def declared(kind: str, number: int) -> dict:
        parts = [{"url": "capacityType", "valueCodeableConcept": {"coding": [{"system": cm.CAPACITY_TYPE_SYSTEM, "code": kind}]}},
                 {"url": "capacityStatus", "valueCodeableConcept": {"coding": [{"system": cm.CAPACITY_COUNT_SYSTEM, "code": "declared"}]}},
                 {"url": "nbCapacity", "valueInteger": number}]
        if declared_at is not None:
            parts.append({"url": "capacityUpdateDate", "valueDateTime": declared_at})
        return {"url": cm.EXT_CAPACITY, "extension": parts}

    return {
        "resourceType": "HealthcareService",
        "id": had,
        "extension": [declared("places", places), declared("admissions", admissions),
                      {"url": cm.EXT_CAPACITY_STATUS,
                       "valueCodeableConcept": {"coding": [{"system": cm.STATUS_SYSTEM, "code": status}]}}],
        "active": True,
        "providedBy": {"type": "Organization", "identifier": {"system": fm.FINESS_SYSTEM, "value": had}},
    }


def kind_and_count(extension: dict) -> tuple[str, str]:
    """(capacityType, capacityStatus) of one had-capacity record."""
    parts = {p["url"]: p for p in extension["extension"]}
    return (parts["capacityType"]["valueCodeableConcept"]["coding"][0]["code"],
            parts["capacityStatus"]["valueCodeableConcept"]["coding"][0]["code"])


def declared_figures(resource: dict) -> dict[tuple[str, str], int]:
    """The figures a HealthcareService carries: {(capacityType, capacityStatus): nbCapacity}."""
    return {kind_and_count(e): next(p["valueInteger"] for p in e["extension"] if p["url"] == "nbCapacity")
            for e in resource["extension"] if e["url"] == cm.EXT_CAPACITY}


def capacity_status(resource: dict) -> str:
    [status] = [e["valueCodeableConcept"]["coding"][0]["code"] for e in resource["extension"] if e["url"] == cm.EXT_CAPACITY_STATUS]
    return status
