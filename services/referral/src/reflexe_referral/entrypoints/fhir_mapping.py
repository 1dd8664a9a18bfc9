"""FHIR R4 shapes of referrals (docs/integration-fhir.md): a referral is a ServiceRequest, its
progress a Task. Pure translation, no I/O: a ServiceRequest becomes the REST API's ReferralIn
body (so both APIs share every rule), and a Referral becomes a ServiceRequest or a Task.

Codes and extensions under https://reflexe.example/fhir/ are ours (no national code system
carries MPP codes, equipment or our refusal reasons); FINESS is the national OID.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from reflexe_common.fhir import BASE, EXTENSION_BASE, FHIR_VERSION, FINESS_SYSTEM, FhirInvalid, finess_reference
from reflexe_common.fhir import FHIR_JSON, bundle, operation_outcome  # noqa: F401  (the routes and tests use them as fm.*)
from reflexe_common.fhir import coding as _coding
from reflexe_common.fhir import iso as _iso
from reflexe_common.vocabulary import MPP_LABELS, PlaceOfCare, Reason, Sex, SourceKind, Urgency
from reflexe_referral.domain.model import Referral, Status

REFERRAL_ID_SYSTEM = f"{BASE}/sid/referral-id"
PSEUDONYM_SYSTEM = f"{BASE}/sid/patient-pseudonym"
MPP_SYSTEM = f"{BASE}/CodeSystem/mpp"
EQUIPMENT_SYSTEM = f"{BASE}/CodeSystem/equipment"
REASON_SYSTEM = f"{BASE}/CodeSystem/reason"
STATUS_SYSTEM = f"{BASE}/CodeSystem/referral-status"
TASK_INPUT_SYSTEM = f"{BASE}/CodeSystem/task-input"
# The steps of an acceptance given subject to the liaison nurse's evaluation visit (Task.businessStatus).
EVALUATION_SYSTEM = f"{BASE}/CodeSystem/evaluation-status"
PENDING_EVALUATION = "pending-evaluation"
EVALUATION_CONFIRMED = "evaluation-confirmed"
EVALUATION_WITHDRAWN = "evaluation-withdrawn"
EVALUATION_LABELS = {
    PENDING_EVALUATION: "Acceptée sous réserve de l'évaluation de l'IDE de liaison",
    EVALUATION_CONFIRMED: "Acceptation confirmée après évaluation",
    EVALUATION_WITHDRAWN: "Acceptation retirée après évaluation",
}
EXT = EXTENSION_BASE
EXT_URGENCY = f"{EXT}/urgency"
EXT_KARNOFSKY = f"{EXT}/karnofsky"
EXT_PALLIATIVE = f"{EXT}/palliative"
EXT_EXPECTED_DURATION = f"{EXT}/expected-duration-days"
EXT_SOURCE_KIND = f"{EXT}/source-kind"
EXT_SOURCE_UNIT = f"{EXT}/source-unit"
EXT_PRESCRIBER = f"{EXT}/prescriber-id"
EXT_CARE_COMMUNE = f"{EXT}/care-commune"
EXT_PLACE_OF_CARE = f"{EXT}/place-of-care"
EXT_EHPAD = f"{EXT}/ehpad"
EXT_PATIENT_CONSENT = f"{EXT}/patient-consent"
EXT_GP_AGREEMENT = f"{EXT}/gp-agreement"
EXT_CAREGIVER = f"{EXT}/caregiver-present"
EXT_ED_ARRIVAL = f"{EXT}/ed-arrival-at"
EXT_DESIRED_ADMISSION = f"{EXT}/desired-admission-at"
EXT_AVIS = f"{EXT}/avis-had"
OFFER_INPUT = "offer-id"

PRIORITY_OF_URGENCY = {Urgency.WITHIN_24H: "urgent", Urgency.PLANNED: "routine"}
GENDER_OF_SEX = {Sex.F: "female", Sex.M: "male", Sex.UNKNOWN: "unknown"}
SEX_OF_GENDER = {"female": Sex.F, "male": Sex.M, "unknown": Sex.UNKNOWN, "other": Sex.UNKNOWN}

# The lifecycle as a Task: the platform "owns" the search, an HAD the offer it was made.
TASK_STATUS = {
    Status.INCOMPLETE: "draft",  # waits for a consent: not yet to be acted upon by any HAD
    Status.REQUESTED: "ready",  # the matcher is looking for an HAD
    Status.ESCALATED: "on-hold",  # no HAD found: the coordination desk steers it
    Status.OFFERED: "requested",  # awaiting the HAD's answer (the Task's owner)
    Status.ACCEPTED: "accepted",
    Status.ADMITTED: "in-progress",
    Status.DISCHARGED: "completed",
    Status.CANCELLED: "cancelled",
    Status.INELIGIBLE: "rejected",
}
STATUS_LABELS = {
    Status.INCOMPLETE: "Incomplète : consentement ou accord du médecin traitant manquant",
    Status.REQUESTED: "Recherche d'une HAD", Status.ESCALATED: "Aucune HAD trouvée, cellule de coordination",
    Status.OFFERED: "Proposée à une HAD", Status.ACCEPTED: "Acceptée par l'HAD", Status.ADMITTED: "Patient admis en HAD",
    Status.DISCHARGED: "Sortie d'HAD", Status.CANCELLED: "Annulée", Status.INELIGIBLE: "Non éligible (avis HAD)",
}


# ---------------------------------------------------------------------------- inbound


class _Reader:
    """Reads a ServiceRequest into a ReferralIn body, remembering which element each field came
    from so that the REST rules' errors (`body.clinical.main_mpp`) name FHIR elements."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.origin: dict[str, str] = {}
        self.problems: list[tuple[str, str]] = []

    def problem(self, expression: str, message: str) -> None:
        self.problems.append((expression, message))

    def extension(self, holder: dict[str, Any], url: str, where: str) -> tuple[dict[str, Any] | None, str]:
        found = [(i, e) for i, e in enumerate(holder.get("extension") or []) if e.get("url") == url]
        expression = f"{where}.extension('{url}')"
        if len(found) > 1:
            self.problem(expression, "given more than once")
        return (found[0][1] if found else None), expression

    def value(self, holder: dict[str, Any], url: str, kind: str, field: str, where: str = "ServiceRequest",
              required: bool = False) -> Any:
        ext, expression = self.extension(holder, url, where)
        self.origin[field] = expression
        if ext is None:
            if required:
                self.problem(expression, f"required ({url})")
            return None
        key = f"value{kind}"
        if key not in ext:
            self.problem(expression, f"needs a {key}")
            return None
        return ext[key]


def _structure_problems(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """FHIR's own structural rules (types, cardinalities, unknown elements), from the R4 models."""
    from fhir.resources.R4B.servicerequest import ServiceRequest

    try:
        ServiceRequest.model_validate(resource)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = "ServiceRequest"
            for part in error["loc"]:
                if isinstance(part, int):
                    path += f"[{part}]"
                elif not str(part).startswith("function-") and part not in ("__root__",):
                    path += f".{part}"
            problems.append((path, error["msg"]))
        return problems
    except Exception as exc:  # the models raise plain errors on some shapes (e.g. a wrong resourceType)
        return [("ServiceRequest", str(exc))]
    return []


def referral_in_from_service_request(resource: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The ReferralIn body a ServiceRequest stands for, and where each body field came from."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest":
        raise FhirInvalid([("ServiceRequest", "the body must be a ServiceRequest resource")], status=400, code="structure")
    if problems := _structure_problems(resource):
        raise FhirInvalid(problems, status=400, code="structure")
    r = _Reader(resource)
    if resource.get("status") != "active":
        r.problem("ServiceRequest.status", "a new referral is 'active'")
    if resource.get("intent") != "order":
        r.problem("ServiceRequest.intent", "a referral is an 'order'")

    body: dict[str, Any] = {}
    ids = [i for i in resource.get("identifier") or [] if i.get("system") == REFERRAL_ID_SYSTEM]
    if len(ids) > 1:
        r.problem("ServiceRequest.identifier", f"at most one identifier of system {REFERRAL_ID_SYSTEM}")
    elif ids:
        body["referral_id"] = ids[0].get("value")
        r.origin["referral_id"] = "ServiceRequest.identifier"

    requester = resource.get("requester") or {}
    identifier = requester.get("identifier") or {}
    if requester.get("type", "Organization") != "Organization" or identifier.get("system") != FINESS_SYSTEM:
        r.problem("ServiceRequest.requester", f"the requesting Organization by its FINESS identifier ({FINESS_SYSTEM})")
    source = {"finess": identifier.get("value"),
              "kind": r.value(resource, EXT_SOURCE_KIND, "Code", "source.kind") or SourceKind.ED.value,
              "unit": r.value(resource, EXT_SOURCE_UNIT, "String", "source.unit") or "",
              "prescriber_id": r.value(resource, EXT_PRESCRIBER, "String", "source.prescriber_id") or ""}
    r.origin["source.finess"] = "ServiceRequest.requester.identifier.value"
    body["source"] = source

    body["patient"] = _patient(r, resource)

    clinical: dict[str, Any] = {}
    main = [c for c in (resource.get("code") or {}).get("coding") or [] if c.get("system") == MPP_SYSTEM]
    r.origin["clinical.main_mpp"] = "ServiceRequest.code"
    if len(main) != 1:
        r.problem("ServiceRequest.code", f"exactly one coding of the MPP code system {MPP_SYSTEM} (the main MPP)")
    else:
        clinical["main_mpp"] = main[0].get("code")
    associated, equipment = [], []
    for i, detail in enumerate(resource.get("orderDetail") or []):
        codings = detail.get("coding") or []
        if len(codings) != 1 or codings[0].get("system") not in (MPP_SYSTEM, EQUIPMENT_SYSTEM):
            r.problem(f"ServiceRequest.orderDetail[{i}]", f"one coding, of {MPP_SYSTEM} or {EQUIPMENT_SYSTEM}")
            continue
        coding = codings[0]
        target = associated if coding["system"] == MPP_SYSTEM else equipment
        name = "associated_mpp" if target is associated else "equipment"
        r.origin[f"clinical.{name}.{len(target)}"] = f"ServiceRequest.orderDetail[{i}]"
        target.append(coding.get("code"))
    clinical["associated_mpp"], clinical["equipment"] = associated, equipment
    clinical["karnofsky"] = r.value(resource, EXT_KARNOFSKY, "Integer", "clinical.karnofsky", required=True)
    clinical["palliative"] = bool(r.value(resource, EXT_PALLIATIVE, "Boolean", "clinical.palliative"))
    urgency = r.value(resource, EXT_URGENCY, "Code", "clinical.urgency")
    priority = resource.get("priority")
    if urgency is None:  # the FHIR priority alone: urgent/asap/stat mean within 24 h
        urgency = Urgency.PLANNED.value if priority == "routine" else Urgency.WITHIN_24H.value
        r.origin["clinical.urgency"] = "ServiceRequest.priority"
    elif priority is not None and urgency in PRIORITY_OF_URGENCY and PRIORITY_OF_URGENCY[Urgency(urgency)] != priority:
        r.problem("ServiceRequest.priority", f"contradicts the urgency extension ({urgency} is '{PRIORITY_OF_URGENCY[Urgency(urgency)]}')")
    clinical["urgency"] = urgency
    if "occurrenceDateTime" in resource:
        clinical["planned_date"] = str(resource["occurrenceDateTime"])[:10]
        r.origin["clinical.planned_date"] = "ServiceRequest.occurrence"
    if (days := r.value(resource, EXT_EXPECTED_DURATION, "Integer", "clinical.expected_duration_days")) is not None:
        clinical["expected_duration_days"] = days
    body["clinical"] = clinical

    body["conditions"] = {
        "patient_consent": r.value(resource, EXT_PATIENT_CONSENT, "Boolean", "conditions.patient_consent", required=True),
        "gp_agreement": r.value(resource, EXT_GP_AGREEMENT, "Boolean", "conditions.gp_agreement", required=True),
        "caregiver_present": r.value(resource, EXT_CAREGIVER, "Boolean", "conditions.caregiver_present", required=True),
    }
    if "authoredOn" in resource:
        body["requested_at"] = resource["authoredOn"]
        r.origin["requested_at"] = "ServiceRequest.authoredOn"
    if (arrival := r.value(resource, EXT_ED_ARRIVAL, "DateTime", "ed_arrival_at")) is not None:
        body["ed_arrival_at"] = arrival
    if (desired := r.value(resource, EXT_DESIRED_ADMISSION, "DateTime", "desired_admission_at")) is not None:
        body["desired_admission_at"] = desired
    avis, expression = r.extension(resource, EXT_AVIS, "ServiceRequest")
    if avis is not None:
        eligible = r.value(avis, "eligible", "Boolean", "avis.eligible", where=expression, required=True)
        reason = r.value(avis, "reason", "Coding", "avis.reason", where=expression)
        body["avis"] = {"eligible": eligible, "reason": reason.get("code") if isinstance(reason, dict) else None,
                        "text": r.value(avis, "text", "String", "avis.text", where=expression) or ""}
    for unsupported in ("basedOn", "replaces", "performer", "locationReference", "reasonReference", "supportingInfo",
                        "specimen", "insurance", "relevantHistory", "note", "patientInstruction"):
        if unsupported in resource:
            # Refused rather than dropped: nothing accepted is silently lost, and free text could name the patient.
            r.problem(f"ServiceRequest.{unsupported}", "not taken by this server (see its CapabilityStatement and docs)")
    if r.problems:
        raise FhirInvalid(r.problems)
    return body, r.origin


# The REST request update's fields (RequestUpdateIn): what a ServiceRequest update may change.
UPDATABLE_FIELDS = ("conditions.patient_consent", "conditions.gp_agreement", "conditions.caregiver_present")


def request_update_from_service_request(resource: Any, current: Referral) -> dict[str, Any]:
    """The REST request update (RequestUpdateIn body) a `PUT /fhir/ServiceRequest/{id}` stands for.
    A FHIR update sends the whole resource: every element but the consents must be what the
    server holds (what a GET answers); one that differs is refused (422), naming the element,
    since changing the clinical data or the patient means a new referral."""
    from reflexe_referral.entrypoints.schemas import ReferralIn

    body, origin = referral_in_from_service_request(resource)
    body.setdefault("referral_id", current.referral_id)
    for field, expression in (("referral_id", "ServiceRequest.identifier"), ("requested_at", "ServiceRequest.authoredOn"),
                              ("clinical.planned_date", "ServiceRequest.occurrence"),
                              ("avis", f"ServiceRequest.extension('{EXT_AVIS}')")):
        origin.setdefault(field, expression)
    try:
        sent = ReferralIn.model_validate(body).model_dump()
    except ValidationError as exc:
        raise FhirInvalid([(expression_of(".".join(str(p) for p in e["loc"]), origin), e["msg"])
                           for e in exc.errors()]) from exc
    held_body, _ = referral_in_from_service_request(service_request(current))
    try:
        held = ReferralIn.model_validate(held_body).model_dump()
    except ValidationError:  # a referral taken under older rules: compared as rendered
        held = held_body
    for body_ in (sent, held):  # equipment is a set: its order in orderDetail means nothing
        body_["clinical"]["equipment"] = sorted(map(str, body_["clinical"].get("equipment") or []))
    changed = [field for field in _differences(sent, held, "") if field not in UPDATABLE_FIELDS]
    if changed:
        raise FhirInvalid([(expression_of(field, origin), "not updatable: only the patient's consent, the GP's agreement "
                                                          "and the caregiver's presence change; anything else is a new "
                                                          "referral") for field in changed])
    return {"conditions": {name: sent["conditions"][name] for name in ("patient_consent", "gp_agreement",
                                                                        "caregiver_present")}}


def _differences(sent: Any, held: Any, path: str) -> list[str]:
    """The dotted paths (`clinical.karnofsky`, `clinical.associated_mpp.0`) where two bodies differ."""
    if isinstance(sent, dict) and isinstance(held, dict):
        return [found for key in sorted(set(sent) | set(held), key=str)
                for found in _differences(sent.get(key), held.get(key), f"{path}.{key}" if path else str(key))]
    if isinstance(sent, (list, tuple)) and isinstance(held, (list, tuple)) and len(sent) == len(held):
        return [found for i, (a, b) in enumerate(zip(sent, held)) for found in _differences(a, b, f"{path}.{i}")]
    return [] if sent == held else [path]


def _patient(r: _Reader, resource: dict[str, Any]) -> dict[str, Any]:
    subject = (resource.get("subject") or {}).get("reference") or ""
    patient: dict[str, Any] = {}
    r.origin["patient"] = "ServiceRequest.subject"
    contained = [(i, c) for i, c in enumerate(resource.get("contained") or [])
                 if c.get("resourceType") == "Patient" and f"#{c.get('id')}" == subject]
    if not contained:
        r.problem("ServiceRequest.subject", "a reference to a contained Patient (#id) carrying the pseudonym, the birth "
                                            "year and the sex: the platform holds no patient of its own")
        return patient
    i, p = contained[0]
    where = f"ServiceRequest.contained[{i}]"
    for key in p:
        if key not in ("resourceType", "id", "identifier", "gender", "birthDate", "meta"):
            r.problem(f"{where}.{key}", "a referral's patient carries only a pseudonym, a birth year and a sex (privacy)")
    pseudonyms = [x for x in p.get("identifier") or [] if x.get("system") == PSEUDONYM_SYSTEM]
    if len(pseudonyms) != 1 or len(p.get("identifier") or []) != 1:
        r.problem(f"{where}.identifier", f"exactly one identifier, the pseudonym ({PSEUDONYM_SYSTEM})")
    else:
        patient["pseudonym"] = pseudonyms[0].get("value")
    r.origin["patient.pseudonym"] = f"{where}.identifier[0].value"
    birth = str(p.get("birthDate", ""))
    r.origin["patient.birth_year"] = f"{where}.birthDate"
    if len(birth) != 4 or not birth.isdigit():
        r.problem(f"{where}.birthDate", "the birth year only (YYYY): a birth date is a direct identifier")
    else:
        patient["birth_year"] = int(birth)
    r.origin["patient.sex"] = f"{where}.gender"
    if p.get("gender") not in SEX_OF_GENDER:
        r.problem(f"{where}.gender", "required: female, male, other or unknown")
    else:
        patient["sex"] = SEX_OF_GENDER[p["gender"]].value
    patient["care_commune"] = r.value(resource, EXT_CARE_COMMUNE, "Code", "patient.care_commune", required=True)
    patient["place_of_care"] = r.value(resource, EXT_PLACE_OF_CARE, "Code", "patient.place_of_care") or PlaceOfCare.HOME.value
    ehpad = r.value(resource, EXT_EHPAD, "Identifier", "patient.ehpad_finess")
    patient["ehpad_finess"] = ehpad.get("value") if isinstance(ehpad, dict) else None
    return patient


def expression_of(field: str, origin: dict[str, str]) -> str:
    """The FHIR element a ReferralIn field path (`body.clinical.associated_mpp.0`) came from."""
    path = field.removeprefix("body.").replace("[", ".").replace("]", "")
    parts = path.split(".")
    while parts:
        if (found := origin.get(".".join(parts))) is not None:
            return found
        parts.pop()
    return "ServiceRequest"


# ---------------------------------------------------------------------------- outbound


def _ext(url: str, kind: str, value: Any) -> dict[str, Any]:
    return {"url": url, f"value{kind}": value}


def service_request(referral: Referral) -> dict[str, Any]:
    """The referral as a ServiceRequest: every field of the request, as the REST view shows it to
    whoever may see the referral (its hospital, the HAD deciding or caring, its desk, an admin)."""
    request = referral.request
    clinical, patient, source = request.clinical, request.patient, request.source
    extensions = [
        _ext(EXT_URGENCY, "Code", str(clinical.urgency)),
        _ext(EXT_PALLIATIVE, "Boolean", clinical.palliative),
        _ext(EXT_SOURCE_KIND, "Code", str(source.kind)),
        _ext(EXT_CARE_COMMUNE, "Code", patient.care_commune),
        _ext(EXT_PLACE_OF_CARE, "Code", str(patient.place_of_care)),
    ]
    if source.unit:
        extensions.append(_ext(EXT_SOURCE_UNIT, "String", source.unit))
    if source.prescriber_id:
        extensions.append(_ext(EXT_PRESCRIBER, "String", source.prescriber_id))
    if patient.ehpad_finess:
        extensions.append(_ext(EXT_EHPAD, "Identifier", {"system": FINESS_SYSTEM, "value": patient.ehpad_finess}))
    extensions += [
        _ext(EXT_KARNOFSKY, "Integer", clinical.karnofsky),
        _ext(EXT_EXPECTED_DURATION, "Integer", clinical.expected_duration_days),
        _ext(EXT_PATIENT_CONSENT, "Boolean", request.conditions.patient_consent),
        _ext(EXT_GP_AGREEMENT, "Boolean", request.conditions.gp_agreement),
        _ext(EXT_CAREGIVER, "Boolean", request.conditions.caregiver_present),
    ]
    if request.ed_arrival_at:
        extensions.append(_ext(EXT_ED_ARRIVAL, "DateTime", _iso(request.ed_arrival_at)))
    if request.desired_admission_at:
        extensions.append(_ext(EXT_DESIRED_ADMISSION, "DateTime", _iso(request.desired_admission_at)))
    if request.avis is not None:
        parts = [_ext("eligible", "Boolean", request.avis.eligible)]
        if request.avis.reason:
            parts.append(_ext("reason", "Coding", _coding(REASON_SYSTEM, str(request.avis.reason))))
        if request.avis.text:
            parts.append(_ext("text", "String", request.avis.text))
        extensions.append({"url": EXT_AVIS, "extension": parts})
    contained_patient: dict[str, Any] = {
        "resourceType": "Patient", "id": "patient",
        "identifier": [{"system": PSEUDONYM_SYSTEM, "value": patient.pseudonym}],
        "birthDate": f"{patient.birth_year:04d}",
        "gender": GENDER_OF_SEX[patient.sex],
    }
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": referral.referral_id,
        "meta": {"versionId": str(referral.version)},
        "contained": [contained_patient],
        "extension": extensions,
        "identifier": [{"system": REFERRAL_ID_SYSTEM, "value": referral.referral_id}],
        "status": _service_request_status(referral.status),
        "intent": "order",
        "priority": PRIORITY_OF_URGENCY[clinical.urgency],
        "code": {"coding": [_coding(MPP_SYSTEM, clinical.main_mpp, MPP_LABELS.get(clinical.main_mpp))]},
        "subject": {"reference": "#patient"},
        "authoredOn": _iso(request.requested_at),
        "requester": finess_reference(source.finess),
    }
    details = [{"coding": [_coding(MPP_SYSTEM, code, MPP_LABELS.get(code))]} for code in clinical.associated_mpp]
    details += [{"coding": [_coding(EQUIPMENT_SYSTEM, str(e))]} for e in sorted(clinical.equipment)]
    if details:
        resource["orderDetail"] = details
    if clinical.planned_date:
        resource["occurrenceDateTime"] = clinical.planned_date.isoformat()
    return resource


def _service_request_status(status: Status) -> str:
    if status in (Status.CANCELLED, Status.INELIGIBLE):
        return "revoked"
    if status is Status.DISCHARGED:
        return "completed"
    return "active"


def _last_modified(referral: Referral) -> datetime:
    offer = referral.current_offer
    stamps = [referral.request.requested_at, referral.accepted_at, referral.admitted_at, referral.discharged_at,
              referral.closed_at, offer.made_at if offer else None]
    return max(s for s in stamps if s is not None)


def task(referral: Referral, viewer_had: str | None = None, declined: tuple[Reason, str] | None = None,
         evaluation: str | None = None) -> dict[str, Any]:
    """The referral's progress as a Task (id = the referral's id). For an HAD (`viewer_had`) that
    has just declined or withdrawn (`evaluation` EVALUATION_WITHDRAWN), its own answer: status
    rejected with its reason, not the next search. An acceptance pending evaluation shows as
    `accepted` with the `pending-evaluation` business status, a confirmed one with
    `evaluation-confirmed` (whenever it is read: the HAD's system learns the step it missed)."""
    status = referral.status
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": referral.referral_id,
        "meta": {"versionId": str(referral.version)},
        "identifier": [{"system": REFERRAL_ID_SYSTEM, "value": referral.referral_id}],
        "status": TASK_STATUS[status],
        "businessStatus": {"coding": [_coding(STATUS_SYSTEM, str(status), STATUS_LABELS[status])]},
        "intent": "order",
        "priority": PRIORITY_OF_URGENCY[referral.request.clinical.urgency],
        "focus": {"reference": f"ServiceRequest/{referral.referral_id}"},
        "for": {"type": "Patient", "identifier": {"system": PSEUDONYM_SYSTEM, "value": referral.request.patient.pseudonym}},
        "authoredOn": _iso(referral.request.requested_at),
        "lastModified": _iso(_last_modified(referral)),
        "requester": finess_reference(referral.request.source.finess),
    }
    offer = referral.current_offer
    owner = None
    if offer is not None:
        owner = offer.had_finess
        resource["restriction"] = {"period": {"end": _iso(offer.hold_until)}}  # the place is held until then
        resource["input"] = [{"type": {"coding": [_coding(TASK_INPUT_SYSTEM, OFFER_INPUT, "Offre en attente de réponse")]},
                              "valueString": offer.offer_id}]
    elif status in (Status.ACCEPTED, Status.ADMITTED, Status.DISCHARGED) or referral.accepted_had:
        owner = referral.admitted_had or referral.accepted_had
    if status is Status.ACCEPTED and referral.evaluation_pending:
        resource["businessStatus"]["coding"].append(_evaluation_coding(PENDING_EVALUATION))
    elif status is Status.ACCEPTED and referral.evaluation_confirmed:
        resource["businessStatus"]["coding"].append(_evaluation_coding(EVALUATION_CONFIRMED))
    if status in (Status.CANCELLED, Status.INELIGIBLE) and referral.closed_reason:
        resource["statusReason"] = {"coding": [_coding(REASON_SYSTEM, str(referral.closed_reason))]}
    if declined is not None and viewer_had is not None:
        reason, text = declined
        resource["status"] = "rejected"
        resource["businessStatus"] = {"coding": [
            _evaluation_coding(EVALUATION_WITHDRAWN) if evaluation == EVALUATION_WITHDRAWN
            else _coding(STATUS_SYSTEM, "DECLINED", "Refusée par l'HAD")]}
        resource["statusReason"] = {"coding": [_coding(REASON_SYSTEM, str(reason))], **({"text": text} if text else {})}
        resource.pop("restriction", None)
        resource.pop("input", None)
        owner = viewer_had
    if owner:
        resource["owner"] = finess_reference(owner)
    return resource


def _evaluation_coding(code: str) -> dict[str, Any]:
    return _coding(EVALUATION_SYSTEM, code, EVALUATION_LABELS[code])


class TaskAnswer(StrEnum):
    """What an HAD's `PUT /fhir/Task/{id}` asks for: one REST command each."""

    ACCEPT = "accept"
    ACCEPT_PENDING_EVALUATION = "accept-pending-evaluation"
    CONFIRM_EVALUATION = "confirm-evaluation"
    DECLINE = "decline"
    WITHDRAW_ACCEPTANCE = "withdraw-acceptance"

    @property
    def answers_an_offer(self) -> bool:
        """Whether the Task must name the offer it answers (its `offer-id` input)."""
        return self in (TaskAnswer.ACCEPT, TaskAnswer.ACCEPT_PENDING_EVALUATION, TaskAnswer.DECLINE)


# (Task.status, evaluation business status) -> the answer. Any other pair is refused, naming the
# element at fault, rather than guessed from the referral's state.
_TASK_ANSWERS = {
    ("accepted", None): TaskAnswer.ACCEPT,
    ("accepted", PENDING_EVALUATION): TaskAnswer.ACCEPT_PENDING_EVALUATION,
    ("accepted", EVALUATION_CONFIRMED): TaskAnswer.CONFIRM_EVALUATION,
    ("rejected", None): TaskAnswer.DECLINE,
    ("rejected", EVALUATION_WITHDRAWN): TaskAnswer.WITHDRAW_ACCEPTANCE,
}


def task_answer(task_resource: dict[str, Any]) -> TaskAnswer:
    """The answer a Task sent by an HAD stands for: its `status`, and the evaluation step its
    `businessStatus` names (codings of other systems, such as the referral status read from the
    server, are ignored)."""
    status = task_resource.get("status")
    if status not in ("accepted", "rejected"):
        raise FhirInvalid([("Task.status", "an HAD answers with accepted or rejected")])
    codings = (task_resource.get("businessStatus") or {}).get("coding") or []
    steps = [c.get("code") for c in codings if isinstance(c, dict) and c.get("system") == EVALUATION_SYSTEM]
    if len(steps) > 1:
        raise FhirInvalid([("Task.businessStatus", f"at most one coding of {EVALUATION_SYSTEM}")])
    step = steps[0] if steps else None
    if step is not None and step not in EVALUATION_LABELS:
        raise FhirInvalid([("Task.businessStatus", f"{EVALUATION_SYSTEM} codes: {', '.join(EVALUATION_LABELS)}")])
    answer = _TASK_ANSWERS.get((status, step))
    if answer is None:
        allowed = {"accepted": f"none, {PENDING_EVALUATION} or {EVALUATION_CONFIRMED}",
                   "rejected": f"none or {EVALUATION_WITHDRAWN}"}[status]
        raise FhirInvalid([("Task.businessStatus", f"with status {status}, the evaluation step is {allowed}")])
    return answer


def offer_id_of(task_resource: dict[str, Any]) -> str | None:
    for item in task_resource.get("input") or []:
        codes = [(c.get("system"), c.get("code")) for c in (item.get("type") or {}).get("coding") or []]
        if (TASK_INPUT_SYSTEM, OFFER_INPUT) in codes:
            return item.get("valueString")
    return None


def capability_statement(base_url: str, issuer: str | None, published: datetime) -> dict[str, Any]:
    """What this server does, and nothing more (kept beside the routes it describes)."""
    security: dict[str, Any] = {
        "cors": False,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "OAuth", "display": "OAuth"}]}],
        "description": "OpenID Connect access token (Bearer) of the platform's identity provider"
                       + (f" ({issuer})" if issuer else "") + "; roles hospital, had, desk, admin; scoped to the caller.",
    }
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _iso(published),
        "publisher": "Réflexe",
        "kind": "instance",
        "software": {"name": "Réflexe referral service"},
        "implementation": {"description": "Referrals from emergency departments to home hospitalisation (HAD)",
                           "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": security,
            "resource": [
                {"type": "ServiceRequest",
                 "documentation": "A referral: POST (hospital; conditional create on the referral identifier), read; "
                                  "PUT (its hospital or its department's desk) with If-Match: W/\"<versionId>\" "
                                  "changes the consents only (patient-consent, gp-agreement, caregiver-present "
                                  "extensions); any other element changed is refused (422).",
                 "interaction": [{"code": "read"}, {"code": "create"}, {"code": "update"}],
                 "versioning": "versioned-update",
                 "conditionalCreate": True, "conditionalUpdate": False,
                 "readHistory": False, "updateCreate": False},
                {"type": "Task",
                 "documentation": "A referral's progress. An HAD answers its offer by PUT: status accepted, or "
                                  "rejected with a statusReason; accepted with the businessStatus "
                                  f"{EVALUATION_SYSTEM}|{PENDING_EVALUATION} accepts subject to its liaison nurse's "
                                  f"evaluation, then accepted with {EVALUATION_CONFIRMED} confirms it, or rejected "
                                  f"with {EVALUATION_WITHDRAWN} and a statusReason withdraws it.",
                 "interaction": [{"code": "read"}, {"code": "update"}, {"code": "search-type"}],
                 "versioning": "versioned",
                 "readHistory": False, "updateCreate": False, "conditionalUpdate": False,
                 "searchParam": [
                     {"name": "focus", "type": "reference", "documentation": "ServiceRequest/{id}"},
                     {"name": "owner", "type": "reference",
                      "documentation": "Organization/{FINESS}, with status=requested: an HAD's offers awaiting its answer"},
                     {"name": "status", "type": "token", "documentation": "requested only, with owner"},
                 ]},
            ],
        }],
    }
