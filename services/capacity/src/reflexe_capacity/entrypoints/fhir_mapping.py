"""FHIR R4 shape of an HAD's capacity (docs/integration-fhir.md, "HAD capacity"): the HAD's offer
is a HealthcareService whose id is its FINESS, its capacity is carried by extensions shaped like
the French ROR guide's: `had-capacity` follows `ror-location-supported-capacity` (one record per
figure: nature, status, temporality, number, source, update time) and `had-capacity-status`
follows `ror-location-status`. They are ours, under the platform's canonical base: the ROR's
bind its sub-extensions to national value sets (nature, status and temporality of a capacity)
that describe beds and places of an establishment, not the figures an HAD declares (admissions
still possible today) or the platform computes (places left after its holds), and a validator
run offline could not check them.

Pure translation, no I/O: a capacity reads out of the registry and the ledger, and a
HealthcareService sent by an HAD becomes the REST API's DeclarationIn body (so both doors share
every rule)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from fhir.resources.R4B.healthcareservice import HealthcareService
from pydantic import ValidationError

from reflexe_capacity.domain.capacity import HadLedger
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_common.fhir import (BASE, EXTENSION_BASE, FHIR_VERSION, FINESS_SYSTEM, FhirInvalid, coding,
                                 finess_reference, iso)
from reflexe_common.geography import Geography
from reflexe_common.labels import CAPACITY_STATUS_FR
from reflexe_common.vocabulary import CapacityStatus

EXT_CAPACITY = f"{EXTENSION_BASE}/had-capacity"
EXT_CAPACITY_STATUS = f"{EXTENSION_BASE}/had-capacity-status"
EXT_STALE = f"{EXTENSION_BASE}/had-capacity-stale"
# The sub-extensions of had-capacity, named as in ror-location-supported-capacity.
TYPE, STATUS, TEMPORALITY, NUMBER, SOURCE, UPDATED = (
    "capacityType", "capacityStatus", "temporalityCapacity", "nbCapacity", "capacitySourceType", "capacityUpdateDate")

CAPACITY_TYPE_SYSTEM = f"{BASE}/CodeSystem/capacity-type"
CAPACITY_COUNT_SYSTEM = f"{BASE}/CodeSystem/capacity-count"
TEMPORALITY_SYSTEM = f"{BASE}/CodeSystem/capacity-temporality"
SOURCE_SYSTEM = f"{BASE}/CodeSystem/capacity-source"
STATUS_SYSTEM = f"{BASE}/CodeSystem/capacity-status"
SERVICE_CATEGORY_SYSTEM = f"{BASE}/CodeSystem/service-category"
DEPARTMENT_SYSTEM = f"{BASE}/sid/department"

# PATIENTS: the HAD's census, every patient in its care (not only those the platform referred).
PLACES, ADMISSIONS, PATIENTS = "places", "admissions", "patients"
AUTHORISED, DECLARED, AVAILABLE, HELD = "authorised", "declared", "available", "held"
TYPE_LABELS = {PLACES: "Places d'HAD", ADMISSIONS: "Admissions du jour", PATIENTS: "Patients en cours"}
COUNT_LABELS = {AUTHORISED: "Autorisées", DECLARED: "Déclarées par l'HAD",
                AVAILABLE: "Disponibles (après les places réservées par la plateforme)", HELD: "Réservées par la plateforme"}
TEMPORALITY_LABELS = {"current": "Actuelle", "today": "Aujourd'hui", "authorisation": "Autorisation"}
SOURCE_LABELS = {"registry": "Registre des HAD", "had": "Déclaration de l'HAD", "platform": "Calcul de la plateforme"}
UNDECLARED = "UNDECLARED"
STATUS_LABELS = {**CAPACITY_STATUS_FR, UNDECLARED: "Aucune déclaration"}


def _concept(system: str, code: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"coding": [coding(system, code, labels.get(code))]}


def _capacity(kind: str, count: str, temporality: str, number: int, source: str,
              updated: datetime | None) -> dict[str, Any]:
    parts = [
        {"url": TYPE, "valueCodeableConcept": _concept(CAPACITY_TYPE_SYSTEM, kind, TYPE_LABELS)},
        {"url": STATUS, "valueCodeableConcept": _concept(CAPACITY_COUNT_SYSTEM, count, COUNT_LABELS)},
        {"url": TEMPORALITY, "valueCodeableConcept": _concept(TEMPORALITY_SYSTEM, temporality, TEMPORALITY_LABELS)},
        {"url": NUMBER, "valueInteger": number},
        {"url": SOURCE, "valueCodeableConcept": _concept(SOURCE_SYSTEM, source, SOURCE_LABELS)},
    ]
    if updated is not None:
        parts.append({"url": UPDATED, "valueDateTime": iso(updated)})
    return {"url": EXT_CAPACITY, "extension": parts}


def _department_area(code: str) -> dict[str, Any]:
    department = Geography.load().department(code)
    area: dict[str, Any] = {"type": "Location", "identifier": {"system": DEPARTMENT_SYSTEM, "value": code}}
    if department is not None:
        area["display"] = department.name
    return area


def healthcare_service(had: HadEstablishment, ledger: HadLedger, now: datetime, stale_after: timedelta) -> dict[str, Any]:
    """The HAD's offer and its capacity as of `now`: the figures of the REST capacity board."""
    declaration = ledger.declaration
    extensions = [_capacity(PLACES, AUTHORISED, "authorisation", had.authorised_places, "registry", None)]
    status = UNDECLARED
    if declaration is not None:
        status = str(declaration.status)
        left_today = ledger.admissions_today_left(now)
        extensions += [
            _capacity(PLACES, DECLARED, "current", declaration.places_available, "had", declaration.declared_at),
            _capacity(PLACES, AVAILABLE, "current", ledger.live_places(), "platform", now),
            _capacity(PLACES, HELD, "current", ledger.holding, "platform", now),
            _capacity(ADMISSIONS, DECLARED, "today", declaration.admissions_possible_today, "had", declaration.declared_at),
        ]
        if left_today is not None:  # a declaration of another day says nothing of today's admissions
            extensions.append(_capacity(ADMISSIONS, AVAILABLE, "today", left_today, "platform", now))
        if declaration.active_patients is not None:
            extensions.append(_capacity(PATIENTS, DECLARED, "current", declaration.active_patients, "had",
                                        declaration.declared_at))
    extensions += [
        {"url": EXT_CAPACITY_STATUS, "valueCodeableConcept": _concept(STATUS_SYSTEM, status, STATUS_LABELS)},
        {"url": EXT_STALE, "valueBoolean": ledger.is_stale(now, stale_after)},
    ]
    resource = HealthcareService.model_validate({
        "resourceType": "HealthcareService",
        "id": had.finess,
        "meta": {"lastUpdated": iso(now)},
        "extension": extensions,
        "active": True,
        "providedBy": {**finess_reference(had.finess), "display": had.name},
        "category": [_concept(SERVICE_CATEGORY_SYSTEM, "HAD", {"HAD": "Hospitalisation à domicile"})],
        "name": had.name,
        "coverageArea": [_department_area(d) for d in sorted(had.departments)],
    })
    return json.loads(resource.model_dump_json(exclude_none=True))


# ---------------------------------------------------------------------------- inbound


def _structure_problems(resource: dict[str, Any]) -> list[tuple[str | None, str]]:
    """FHIR's own structural rules (types, cardinalities, unknown elements), from the R4 models."""
    try:
        HealthcareService.model_validate(resource)
    except ValidationError as exc:
        problems: list[tuple[str | None, str]] = []
        for error in exc.errors():
            path = "HealthcareService"
            for part in error["loc"]:
                if isinstance(part, int):
                    path += f"[{part}]"
                elif not str(part).startswith("function-") and part != "__root__":
                    path += f".{part}"
            problems.append((path, error["msg"]))
        return problems
    except Exception as exc:  # the models raise plain errors on some shapes
        return [("HealthcareService", str(exc))]
    return []


def _code(concept: Any, system: str) -> str | None:
    codes = [c.get("code") for c in (concept or {}).get("coding") or [] if c.get("system") == system]
    return codes[0] if len(codes) == 1 else None


def _part(extension: dict[str, Any], url: str) -> dict[str, Any] | None:
    found = [p for p in extension.get("extension") or [] if p.get("url") == url]
    return found[0] if len(found) == 1 else None


def declaration_in_from_healthcare_service(resource: Any, finess: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The DeclarationIn body a HealthcareService sent by an HAD stands for, and the element each
    body field came from. What the HAD declares: the `had-capacity` records whose capacityStatus
    is `declared` (places, admissions today, and optionally patients: the census), and
    `had-capacity-status`; the figures the
    platform computes (authorised, available, held) are the platform's and are not read."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "HealthcareService":
        raise FhirInvalid([("HealthcareService", "the body must be a HealthcareService resource")], 400, "structure")
    if problems := _structure_problems(resource):
        raise FhirInvalid(problems, 400, "structure")
    if resource.get("id") != finess:
        raise FhirInvalid([("HealthcareService.id", "must be the FINESS in the URL")], 400, "structure")
    problems: list[tuple[str | None, str]] = []
    origin: dict[str, str] = {}
    provider = (resource.get("providedBy") or {}).get("identifier") or {}
    if "providedBy" in resource and (provider.get("system") != FINESS_SYSTEM or provider.get("value") != finess):
        problems.append(("HealthcareService.providedBy", f"the HAD itself, by its FINESS identifier ({FINESS_SYSTEM})"))

    body: dict[str, Any] = {}
    declared: dict[str, list[int]] = {PLACES: [], ADMISSIONS: [], PATIENTS: []}
    extensions = resource.get("extension") or []
    for i, extension in enumerate(extensions):
        if extension.get("url") != EXT_CAPACITY:
            continue
        where = f"HealthcareService.extension[{i}]"
        count = _part(extension, STATUS)
        if count is None or _code(count.get("valueCodeableConcept"), CAPACITY_COUNT_SYSTEM) is None:
            problems.append((f"{where}.extension('{STATUS}')", f"one {STATUS} coded in {CAPACITY_COUNT_SYSTEM}"))
            continue
        if _code(count["valueCodeableConcept"], CAPACITY_COUNT_SYSTEM) != DECLARED:
            continue  # a figure the platform computes: the HAD read it, it does not declare it
        kind_part = _part(extension, TYPE)
        kind = _code((kind_part or {}).get("valueCodeableConcept"), CAPACITY_TYPE_SYSTEM)
        if kind not in declared:
            problems.append((f"{where}.extension('{TYPE}')",
                             f"{PLACES}, {ADMISSIONS} or {PATIENTS}, coded in {CAPACITY_TYPE_SYSTEM}"))
            continue
        declared[kind].append(i)
    for kind, field in ((PLACES, "places_available"), (ADMISSIONS, "admissions_possible_today"),
                        (PATIENTS, "active_patients")):
        if kind == PATIENTS and not declared[kind]:
            continue  # the census is optional
        if len(declared[kind]) != 1:
            problems.append(("HealthcareService.extension", f"exactly one {EXT_CAPACITY} with {TYPE} {kind} and {STATUS} "
                                                            f"{DECLARED} (found {len(declared[kind])})"
                                                            + (", or none" if kind == PATIENTS else "")))
            continue
        where = f"HealthcareService.extension[{declared[kind][0]}]"
        number = _part(extensions[declared[kind][0]], NUMBER)
        origin[field] = f"{where}.extension('{NUMBER}')"
        if number is None or "valueInteger" not in number:
            problems.append((origin[field], f"one {NUMBER} (valueInteger)"))
        else:
            body[field] = number["valueInteger"]

    # The time of the declaration: the declared records' capacityUpdateDate, the same on all; absent, now.
    times = {}
    for kind in (PLACES, ADMISSIONS, PATIENTS):
        if len(declared[kind]) == 1 and (updated := _part(extensions[declared[kind][0]], UPDATED)) is not None:
            times[f"HealthcareService.extension[{declared[kind][0]}].extension('{UPDATED}')"] = updated.get("valueDateTime")
    if len(set(times.values())) > 1:
        problems += [(where, "the declared places, admissions and patients are declared at the same time")
                     for where in times]
    elif times:
        where, value = next(iter(times.items()))
        origin["declared_at"] = where
        body["declared_at"] = value

    statuses = [(i, e) for i, e in enumerate(extensions) if e.get("url") == EXT_CAPACITY_STATUS]
    status_where = f"HealthcareService.extension('{EXT_CAPACITY_STATUS}')"
    origin["status"] = status_where
    declarable = [s.value for s in CapacityStatus]
    status = _code(statuses[0][1].get("valueCodeableConcept"), STATUS_SYSTEM) if len(statuses) == 1 else None
    if status not in declarable:
        problems.append((status_where, f"exactly one, coded in {STATUS_SYSTEM}: {', '.join(declarable)}"))
    else:
        body["status"] = status
    if problems:
        raise FhirInvalid(problems)
    return body, origin


def expression_of(field: str, origin: dict[str, str]) -> str:
    """The FHIR element a DeclarationIn field path (`body.places_available`) came from."""
    return origin.get(field.removeprefix("body.").split(".")[0], "HealthcareService")


def capability_statement(base_url: str, issuer: str | None, published: datetime) -> dict[str, Any]:
    """What this server does, and nothing more (kept beside the routes it describes)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": iso(published),
        "publisher": "Réflexe",
        "kind": "instance",
        "software": {"name": "Réflexe capacity service"},
        "implementation": {"description": "Live capacity of home hospitalisation (HAD) establishments", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": False,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "OAuth", "display": "OAuth"}]}],
                "description": "OpenID Connect access token (Bearer) of the platform's identity provider"
                               + (f" ({issuer})" if issuer else "") + "; roles had, desk, ars, admin; scoped to the caller.",
            },
            "resource": [{
                "type": "HealthcareService",
                "documentation": "An HAD's offer and live capacity (id: its FINESS; extensions had-capacity, "
                                 "had-capacity-status, had-capacity-stale). Read: the HAD itself, a desk of one of its "
                                 "departments, the ARS of its region. Update (PUT): the HAD declares its capacity.",
                "interaction": [{"code": "read"}, {"code": "update"}, {"code": "search-type"}],
                "versioning": "no-version",
                "readHistory": False, "updateCreate": False, "conditionalUpdate": False,
                "searchParam": [{"name": "department", "type": "token",
                                 "documentation": "The HADs serving a department (INSEE code, e.g. 34): a desk its own, "
                                                  "the ARS those of its region"}],
            }],
        }],
    }
