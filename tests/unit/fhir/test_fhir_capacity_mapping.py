"""The FHIR translation of HAD capacity, without I/O: an HAD's ledger renders as a HealthcareService
carrying the REST board's figures, a HealthcareService sent back reads into the REST DeclarationIn
body, what cannot be taken is named, and every resource the mapping emits or accepts passes HAPI
FHIR's official R4 validator (run offline) with 0 errors."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from reflexe_capacity.domain.capacity import CapacityDeclaration, HadLedger
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_capacity.entrypoints import fhir_mapping as fm
from reflexe_capacity.entrypoints.schemas import DeclarationIn
from reflexe_common.fhir import FINESS_SYSTEM, FhirInvalid, bundle
from reflexe_common.vocabulary import CapacityStatus
from tests.support.data import unique_finess
from tests.support.fhir_data import capacity_status, declared_figures, healthcare_service_declaration, kind_and_count
from tests.support.fhir_validator import shared_validator

AT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
STALE_AFTER = timedelta(hours=12)


@pytest.fixture(scope="module")
def validator():
    return shared_validator()


def had_of(finess: str, authorised: int = 20) -> HadEstablishment:
    return HadEstablishment(finess=finess, name="HAD Test Montpellier", departments=frozenset({"34", "30"}),
                            mentions=frozenset(), mpp_supported=frozenset({"03"}), equipment=frozenset(),
                            zone_communes=frozenset({"34172"}), authorised_places=authorised)


def ledger_with_holds(finess: str, places: int = 5, admissions: int = 3, confirmed: int = 1, active: int = 1,
                      status: CapacityStatus = CapacityStatus.OPEN) -> HadLedger:
    ledger = HadLedger(finess)
    ledger.declare(CapacityDeclaration(finess, places, admissions, status, AT))
    for n in range(confirmed + active):
        hold = ledger.place_hold(f"hold-{n}", f"00000000-0000-0000-0000-00000000000{n}", AT, timedelta(minutes=30))
        if n < confirmed:
            ledger.confirm(hold.hold_id)
    return ledger


def test_a_ledger_renders_as_a_healthcare_service_with_the_board_figures(validator):
    finess = unique_finess()
    ledger = ledger_with_holds(finess)
    resource = fm.healthcare_service(had_of(finess), ledger, AT + timedelta(hours=1), STALE_AFTER)
    validator.assert_valid(resource)
    assert resource["id"] == finess
    assert resource["providedBy"]["identifier"] == {"system": FINESS_SYSTEM, "value": finess}
    assert [a["identifier"]["value"] for a in resource["coverageArea"]] == ["30", "34"]
    assert resource["coverageArea"][1]["display"] == "Hérault"
    figures = declared_figures(resource)
    assert figures == {("places", "authorised"): 20, ("places", "declared"): 5, ("places", "available"): 3,
                       ("places", "held"): 2, ("admissions", "declared"): 3, ("admissions", "available"): 2}
    assert capacity_status(resource) == "OPEN"
    stale = [e["valueBoolean"] for e in resource["extension"] if e["url"] == fm.EXT_STALE]
    assert stale == [False]
    updated = {e["extension"][1]["valueCodeableConcept"]["coding"][0]["code"]: e["extension"][-1]
               for e in resource["extension"] if e["url"] == fm.EXT_CAPACITY and e["extension"][0]
               ["valueCodeableConcept"]["coding"][0]["code"] == "places"}
    assert updated["declared"] == {"url": fm.UPDATED, "valueDateTime": "2026-11-22T08:00:00Z"}  # the declaration's time
    assert updated["available"] == {"url": fm.UPDATED, "valueDateTime": "2026-11-22T09:00:00Z"}  # as of the read


def test_an_undeclared_or_stale_had_says_so(validator):
    finess = unique_finess()
    undeclared = fm.healthcare_service(had_of(finess), HadLedger(finess), AT, STALE_AFTER)
    validator.assert_valid(undeclared)
    assert declared_figures(undeclared) == {("places", "authorised"): 20}
    assert capacity_status(undeclared) == "UNDECLARED"
    next_day = fm.healthcare_service(had_of(finess), ledger_with_holds(finess, confirmed=0, active=0, status=CapacityStatus.SATURATED),
                                     AT + timedelta(days=1), STALE_AFTER)
    validator.assert_valid(next_day)
    assert ("admissions", "available") not in declared_figures(next_day)  # yesterday's daily figure says nothing of today
    assert capacity_status(next_day) == "SATURATED"
    assert [e["valueBoolean"] for e in next_day["extension"] if e["url"] == fm.EXT_STALE] == [True]


def test_a_healthcare_service_reads_into_the_rest_declaration(validator):
    finess = unique_finess()
    sent = healthcare_service_declaration(finess, places=4, admissions=2, status="SATURATED", declared_at="2026-11-22T09:30:00+01:00")
    validator.assert_valid(sent)
    body, origin = fm.declaration_in_from_healthcare_service(sent, finess)
    assert body == {"places_available": 4, "admissions_possible_today": 2, "status": "SATURATED",
                    "declared_at": "2026-11-22T09:30:00+01:00"}
    DeclarationIn.model_validate(body)  # the REST schema takes it as is
    assert fm.expression_of("body.places_available", origin) == "HealthcareService.extension[0].extension('nbCapacity')"
    assert fm.expression_of("body.declared_at", origin) == "HealthcareService.extension[0].extension('capacityUpdateDate')"
    assert fm.expression_of("body.status", origin) == f"HealthcareService.extension('{fm.EXT_CAPACITY_STATUS}')"


def test_what_the_platform_computes_is_not_read_back(validator):
    """An HAD may PUT back what it read with new declared figures: the computed ones are ignored."""
    finess = unique_finess()
    read = fm.healthcare_service(had_of(finess), ledger_with_holds(finess), AT, STALE_AFTER)
    sent = copy.deepcopy(read)
    for extension in sent["extension"]:
        if extension["url"] == fm.EXT_CAPACITY:
            parts = {p["url"]: p for p in extension["extension"]}
            if parts[fm.STATUS]["valueCodeableConcept"]["coding"][0]["code"] == "declared":
                parts[fm.NUMBER]["valueInteger"] = 9
                extension["extension"] = [p for p in extension["extension"] if p["url"] != fm.UPDATED]
    validator.assert_valid(sent)
    body, _ = fm.declaration_in_from_healthcare_service(sent, finess)
    assert body == {"places_available": 9, "admissions_possible_today": 9, "status": "OPEN"}



def test_the_census_renders_and_reads_back_as_a_declared_patients_record(validator):
    finess = unique_finess()
    ledger = HadLedger(finess)
    ledger.declare(CapacityDeclaration(finess, 5, 3, CapacityStatus.OPEN, AT, active_patients=48))
    read = fm.healthcare_service(had_of(finess), ledger, AT, STALE_AFTER)
    validator.assert_valid(read)
    assert declared_figures(read)[("patients", "declared")] == 48
    body, origin = fm.declaration_in_from_healthcare_service(read, finess)
    assert body["active_patients"] == 48
    assert DeclarationIn.model_validate(body).active_patients == 48
    where = next(i for i, e in enumerate(read["extension"]) if e["url"] == fm.EXT_CAPACITY
                 and kind_and_count(e) == ("patients", "declared"))
    assert fm.expression_of("body.active_patients", origin) == f"HealthcareService.extension[{where}].extension('nbCapacity')"
    # Without a census record the declaration carries none (not zero patients).
    assert "active_patients" not in fm.declaration_in_from_healthcare_service(healthcare_service_declaration(finess), finess)[0]
    twice = copy.deepcopy(read)
    twice["extension"].append(copy.deepcopy(read["extension"][where]))
    with pytest.raises(FhirInvalid) as refused:
        fm.declaration_in_from_healthcare_service(twice, finess)
    assert "HealthcareService.extension" in [e for e, _ in refused.value.problems]

def _without_declared(resource: dict, kind: str) -> dict:
    changed = copy.deepcopy(resource)
    changed["extension"] = [e for e in changed["extension"]
                            if not (e["url"] == fm.EXT_CAPACITY and kind_and_count(e) == (kind, "declared"))]
    return changed


@pytest.mark.parametrize("change, expression", [
    (lambda r: {**r, "providedBy": {"identifier": {"system": FINESS_SYSTEM, "value": "340000000"}}}, "HealthcareService.providedBy"),
    (lambda r: _without_declared(r, "admissions"), "HealthcareService.extension"),
    (lambda r: {**r, "extension": [e for e in r["extension"] if e["url"] != fm.EXT_CAPACITY_STATUS]},
     f"HealthcareService.extension('{fm.EXT_CAPACITY_STATUS}')"),
    (lambda r: {**r, "extension": [e if e["url"] != fm.EXT_CAPACITY_STATUS else
                                   {**e, "valueCodeableConcept": {"coding": [{"system": fm.STATUS_SYSTEM, "code": "UNDECLARED"}]}}
                                   for e in r["extension"]]}, f"HealthcareService.extension('{fm.EXT_CAPACITY_STATUS}')"),
    (lambda r: {**r, "extension": [{**r["extension"][0], "extension": [p for p in r["extension"][0]["extension"]
                                                                         if p["url"] != fm.NUMBER]}, *r["extension"][1:]]},
     "HealthcareService.extension[0].extension('nbCapacity')"),
])
def test_what_cannot_be_taken_is_named(validator, change, expression):
    finess = unique_finess()
    resource = change(healthcare_service_declaration(finess))
    validator.assert_valid(resource)  # valid FHIR, refused by the platform's rules
    with pytest.raises(FhirInvalid) as refused:
        fm.declaration_in_from_healthcare_service(resource, finess)
    assert refused.value.status == 422
    assert expression in [e for e, _ in refused.value.problems]


def test_structural_errors_and_another_id_are_400():
    finess = unique_finess()
    with pytest.raises(FhirInvalid) as refused:
        fm.declaration_in_from_healthcare_service({**healthcare_service_declaration(finess), "colour": "blue"}, finess)
    assert refused.value.status == 400 and any(e.startswith("HealthcareService.colour") for e, _ in refused.value.problems)
    with pytest.raises(FhirInvalid) as refused:
        fm.declaration_in_from_healthcare_service(healthcare_service_declaration(finess), unique_finess())
    assert (refused.value.status, refused.value.problems[0][0]) == (400, "HealthcareService.id")
    with pytest.raises(FhirInvalid) as refused:
        fm.declaration_in_from_healthcare_service({"resourceType": "Location"}, finess)
    assert refused.value.status == 400


def test_the_capability_statement_and_a_searchset_are_valid(validator):
    statement = fm.capability_statement("http://127.0.0.1:8002/fhir", "http://127.0.0.1:18080/realms/reflexe", AT)
    validator.assert_valid(statement)
    assert [r["type"] for r in statement["rest"][0]["resource"]] == ["HealthcareService"]
    finess = unique_finess()
    found = bundle([fm.healthcare_service(had_of(finess), ledger_with_holds(finess), AT, STALE_AFTER)],
                   "http://127.0.0.1:8002/fhir")
    validator.assert_valid(found)
    validator.assert_valid(bundle([], "http://127.0.0.1:8002/fhir"))


def test_the_validator_reports_a_broken_capacity():
    """A control: an extension with both a value and sub-extensions breaks FHIR's ext-1 rule."""
    finess = unique_finess()
    resource = fm.healthcare_service(had_of(finess), ledger_with_holds(finess), AT, STALE_AFTER)
    resource["extension"][0]["valueInteger"] = 3
    assert shared_validator().validate(resource).errors > 0
