"""The FHIR R4 door (docs/integration-fhir.md), as a hospital's or an HAD's system uses it.

A hospital posts its referral as a ServiceRequest (conditional create on the referral id); an
HAD reads its Task and puts it back with status ``accepted``, or ``rejected`` with a
statusReason. Resources are built with the fhir.resources models (R4B's, like the server: the
pydantic-2 releases carry no R4 4.0.1 models; these resources are the same in both).
"""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task, TaskInput

FHIR_JSON = "application/fhir+json"
FINESS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
BASE = "https://reflexe.example/fhir"
REFERRAL_ID_SYSTEM = f"{BASE}/sid/referral-id"
PSEUDONYM_SYSTEM = f"{BASE}/sid/patient-pseudonym"
MPP_SYSTEM = f"{BASE}/CodeSystem/mpp"
EQUIPMENT_SYSTEM = f"{BASE}/CodeSystem/equipment"
REASON_SYSTEM = f"{BASE}/CodeSystem/reason"
TASK_INPUT_SYSTEM = f"{BASE}/CodeSystem/task-input"
OFFER_INPUT = "offer-id"
EXT = f"{BASE}/StructureDefinition"

GENDER = {"F": "female", "M": "male", "U": "unknown"}
PRIORITY = {"WITHIN_24H": "urgent", "PLANNED": "routine"}


def _ext(name: str, **value: Any) -> Extension:
    return Extension(url=f"{EXT}/{name}", **value)


def if_none_exist(referral_id: str) -> str:
    return f"identifier={REFERRAL_ID_SYSTEM}|{referral_id}"


def service_request(body: dict[str, Any]) -> dict[str, Any]:
    """The referral body (POST /v1/referrals) as the ServiceRequest the FHIR API takes."""
    source, patient, clinical = body["source"], body["patient"], body["clinical"]
    conditions = body["conditions"]
    extensions = [
        _ext("source-kind", valueCode=source["kind"]),
        _ext("urgency", valueCode=clinical["urgency"]),
        _ext("karnofsky", valueInteger=clinical["karnofsky"]),
        _ext("palliative", valueBoolean=clinical["palliative"]),
        _ext("care-commune", valueCode=patient["care_commune"]),
        _ext("place-of-care", valueCode=patient["place_of_care"]),
        _ext("patient-consent", valueBoolean=conditions["patient_consent"]),
        _ext("gp-agreement", valueBoolean=conditions["gp_agreement"]),
        _ext("caregiver-present", valueBoolean=conditions["caregiver_present"]),
    ]
    if source.get("unit"):
        extensions.append(_ext("source-unit", valueString=source["unit"]))
    if source.get("prescriber_id"):
        extensions.append(_ext("prescriber-id", valueString=source["prescriber_id"]))
    if clinical.get("expected_duration_days") is not None:
        extensions.append(_ext("expected-duration-days", valueInteger=clinical["expected_duration_days"]))
    if patient.get("ehpad_finess"):
        extensions.append(_ext("ehpad", valueIdentifier=Identifier(system=FINESS_SYSTEM, value=patient["ehpad_finess"])))
    if body.get("ed_arrival_at"):
        extensions.append(_ext("ed-arrival-at", valueDateTime=body["ed_arrival_at"]))
    if body.get("desired_admission_at"):
        extensions.append(_ext("desired-admission-at", valueDateTime=body["desired_admission_at"]))
    if (avis := body.get("avis")) is not None:
        parts = [Extension(url="eligible", valueBoolean=avis["eligible"])]
        if avis.get("reason"):
            parts.append(Extension(url="reason", valueCoding=Coding(system=REASON_SYSTEM, code=avis["reason"])))
        if avis.get("text"):
            parts.append(Extension(url="text", valueString=avis["text"]))
        extensions.append(Extension(url=f"{EXT}/avis-had", extension=parts))
    subject = Patient(id="patient", identifier=[Identifier(system=PSEUDONYM_SYSTEM, value=patient["pseudonym"])],
                      birthDate=f"{patient['birth_year']:04d}", gender=GENDER[patient["sex"]])
    details = [CodeableConcept(coding=[Coding(system=MPP_SYSTEM, code=code)]) for code in clinical["associated_mpp"]]
    details += [CodeableConcept(coding=[Coding(system=EQUIPMENT_SYSTEM, code=code)]) for code in clinical["equipment"]]
    resource = ServiceRequest(
        contained=[subject],
        extension=extensions,
        identifier=[Identifier(system=REFERRAL_ID_SYSTEM, value=body["referral_id"])],
        status="active",
        intent="order",
        priority=PRIORITY[clinical["urgency"]],
        code=CodeableConcept(coding=[Coding(system=MPP_SYSTEM, code=clinical["main_mpp"])]),
        orderDetail=details or None,
        subject=Reference(reference="#patient"),
        occurrenceDateTime=clinical.get("planned_date"),
        authoredOn=body["requested_at"],
        requester=Reference(type="Organization", identifier=Identifier(system=FINESS_SYSTEM, value=source["finess"])),
    )
    return _json(resource)


def offer_id_of(task: dict[str, Any]) -> str | None:
    """The offer a Task awaits an answer to (its ``offer-id`` input), if any."""
    for item in task.get("input") or []:
        if any(c.get("system") == TASK_INPUT_SYSTEM and c.get("code") == OFFER_INPUT
               for c in (item.get("type") or {}).get("coding") or []):
            return item.get("valueString")
    return None


def answered_task(task: dict[str, Any], offer_id: str, decision: str, reason: str | None = None,
                  text: str = "") -> dict[str, Any]:
    """The Task as read, with the HAD's answer: ``accepted``, or ``rejected`` with its reason.
    The offer-id input names the offer answered (the one the HAD was told of)."""
    answer = Task.model_validate(task)
    inputs = [i for i in answer.input or [] if not any(c.system == TASK_INPUT_SYSTEM and c.code == OFFER_INPUT
                                                       for c in i.type.coding or [])]
    inputs.append(TaskInput(type=CodeableConcept(coding=[Coding(system=TASK_INPUT_SYSTEM, code=OFFER_INPUT)]),
                            valueString=offer_id))
    answer.input = inputs
    if decision == "accept":
        answer.status = "accepted"
    else:
        if not reason:
            raise ValueError("a declined offer needs a reason")
        answer.status = "rejected"
        answer.statusReason = CodeableConcept(coding=[Coding(system=REASON_SYSTEM, code=reason)], text=text or None)
    return _json(answer)


def _json(resource: Any) -> dict[str, Any]:
    return json.loads(resource.model_dump_json(exclude_none=True))
