"""The FHIR translation of referrals, without I/O: a ServiceRequest reads into the REST body the
REST rules check, every lifecycle state renders as a Task, and every resource the mapping emits or
accepts passes HAPI FHIR's official R4 validator (run offline) with 0 errors."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from reflexe_common.vocabulary import Reason
from reflexe_referral.domain.model import Referral, Status
from reflexe_referral.entrypoints import fhir_mapping as fm
from reflexe_referral.entrypoints.schemas import ReferralIn
from tests.support.data import unique_finess
from tests.support.fhir_data import service_request_resource
from tests.support.fhir_validator import shared_validator

AT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def referral_from(resource: dict) -> Referral:
    body, _ = fm.referral_in_from_service_request(resource)
    request = ReferralIn.model_validate(body).to_domain("34", body["referral_id"], AT)
    return Referral.from_events(Referral.request(request, AT))


@pytest.fixture(scope="module")
def validator():
    return shared_validator()


def test_a_service_request_reads_into_the_rest_body():
    hospital = unique_finess()
    resource = service_request_resource(hospital)
    body, origin = fm.referral_in_from_service_request(resource)
    assert body["source"] == {"finess": hospital, "kind": "ED", "unit": "SAU", "prescriber_id": ""}
    assert body["patient"]["pseudonym"] == resource["contained"][0]["identifier"][0]["value"]
    assert (body["patient"]["birth_year"], body["patient"]["sex"], body["patient"]["care_commune"]) == (1941, "F", "34172")
    assert body["clinical"]["main_mpp"] == "03" and body["clinical"]["associated_mpp"] == ["09"]
    assert body["clinical"]["equipment"] == ["SYRINGE_DRIVER"] and body["clinical"]["karnofsky"] == 50
    assert body["conditions"] == {"patient_consent": True, "gp_agreement": True, "caregiver_present": True}
    assert body["avis"] == {"eligible": True, "reason": None, "text": "domicile adapté"}
    ReferralIn.model_validate(body)  # the REST schema takes it as is
    assert fm.expression_of("body.clinical.associated_mpp.0", origin) == "ServiceRequest.orderDetail[0]"
    assert fm.expression_of("body.patient.care_commune", origin) == f"ServiceRequest.extension('{fm.EXT_CARE_COMMUNE}')"


@pytest.mark.parametrize("change, expression", [
    ({"intent": "plan"}, "ServiceRequest.intent"),
    ({"subject": {"identifier": {"system": fm.PSEUDONYM_SYSTEM, "value": "x"}}}, "ServiceRequest.subject"),
    ({"requester": {"reference": "Organization/1"}}, "ServiceRequest.requester"),
    ({"code": {"text": "HAD"}}, "ServiceRequest.code"),
    ({"note": [{"text": "Mme Jeanne Martin"}]}, "ServiceRequest.note"),
])
def test_what_cannot_be_taken_is_named(change, expression):
    with pytest.raises(fm.FhirInvalid) as refused:
        fm.referral_in_from_service_request(service_request_resource(unique_finess(), **change))
    assert expression in [e for e, _ in refused.value.problems]


def test_a_patient_with_a_name_or_a_birth_date_is_refused():
    resource = service_request_resource(unique_finess())
    resource["contained"][0].update(name=[{"family": "Martin"}], birthDate="1941-03-02")
    with pytest.raises(fm.FhirInvalid) as refused:
        fm.referral_in_from_service_request(resource)
    assert {e for e, _ in refused.value.problems} >= {"ServiceRequest.contained[0].name", "ServiceRequest.contained[0].birthDate"}


def test_structural_errors_name_the_element():
    with pytest.raises(fm.FhirInvalid) as refused:
        fm.referral_in_from_service_request(service_request_resource(unique_finess(), authoredOn="yesterday"))
    assert refused.value.status == 400
    assert any(e.startswith("ServiceRequest.authoredOn") for e, _ in refused.value.problems)


def _in_every_state(hospital: str, had: str) -> list[tuple[str, Referral]]:
    """One referral per lifecycle state reachable through the domain's own decisions."""
    def fresh():
        return referral_from(service_request_resource(hospital))

    def offered(referral):
        at = AT + timedelta(minutes=1)
        for event in referral.record_offer("offer-1", had, at + timedelta(hours=1), "la plus proche", False, at):
            referral.apply(event)
        return referral

    def then(referral, decide):
        for event in decide(referral):
            referral.apply(event)
        return referral

    later = AT + timedelta(minutes=5)
    states = [("requested", fresh()), ("offered", offered(fresh()))]
    states.append(("accepted", then(offered(fresh()), lambda r: r.accept("offer-1", had, later))))
    pending = then(offered(fresh()), lambda r: r.accept("offer-1", had, later, pending_evaluation=True))
    states.append(("pending evaluation", pending))
    states.append(("confirmed", then(copy.deepcopy(pending), lambda r: r.confirm_evaluation(had, later))))
    states.append(("withdrawn", then(copy.deepcopy(pending),
                                     lambda r: r.withdraw_acceptance(had, Reason.MEDICAL_NOT_ELIGIBLE, "", later))))
    states.append(("declined", then(offered(fresh()), lambda r: r.decline("offer-1", had, Reason.NO_CAPACITY, "", later))))
    admitted = then(then(offered(fresh()), lambda r: r.accept("offer-1", had, later)), lambda r: r.admit(had, later))
    states.append(("admitted", admitted))
    states.append(("discharged", then(copy.deepcopy(admitted), lambda r: r.discharge(had, later + timedelta(days=9)))))
    states.append(("cancelled", then(fresh(), lambda r: r.cancel(Reason.PATIENT_HOSPITALISED, "", later, "hospital:x"))))
    states.append(("escalated", then(fresh(), lambda r: r.escalate("aucune HAD", later))))
    ineligible = service_request_resource(hospital)
    ineligible["extension"] = [e for e in ineligible["extension"] if e["url"] != fm.EXT_AVIS] + [
        {"url": fm.EXT_AVIS, "extension": [{"url": "eligible", "valueBoolean": False},
                                           {"url": "reason", "valueCoding": {"system": fm.REASON_SYSTEM,
                                                                             "code": "MEDICAL_NOT_ELIGIBLE"}}]}]
    states.append(("ineligible", referral_from(ineligible)))
    return states


def test_every_state_as_a_task():
    hospital, had = unique_finess(), unique_finess()
    tasks = {name: fm.task(referral) for name, referral in _in_every_state(hospital, had)}
    assert {name: t["status"] for name, t in tasks.items()} == {
        "requested": "ready", "offered": "requested", "accepted": "accepted", "declined": "ready",
        "pending evaluation": "accepted", "confirmed": "accepted", "withdrawn": "ready",
        "admitted": "in-progress", "discharged": "completed", "cancelled": "cancelled", "escalated": "on-hold",
        "ineligible": "rejected"}
    assert tasks["offered"]["owner"]["identifier"]["value"] == had
    assert fm.offer_id_of(tasks["offered"]) == "offer-1"
    assert "owner" not in tasks["requested"] and "owner" not in tasks["declined"]
    assert tasks["cancelled"]["statusReason"]["coding"][0]["code"] == "PATIENT_HOSPITALISED"
    assert tasks["ineligible"]["statusReason"]["coding"][0]["code"] == "MEDICAL_NOT_ELIGIBLE"
    assert tasks["escalated"]["businessStatus"]["coding"][0]["code"] == Status.ESCALATED


def test_every_resource_emitted_and_accepted_is_valid_r4(validator):
    """ServiceRequest in and out, a Task in every state (and an HAD's own rejection), the
    CapabilityStatement, an OperationOutcome: 0 errors from the official validator."""
    hospital, had = unique_finess(), unique_finess()
    resources = [service_request_resource(hospital)]
    for _, referral in _in_every_state(hospital, had):
        resources += [fm.service_request(referral),
                      fm.task(referral)]
    offered = dict(_in_every_state(hospital, had))["offered"]
    resources.append(fm.task(offered, had, (Reason.NO_CAPACITY, "plus de place ce soir")))
    states = dict(_in_every_state(hospital, had))
    resources.append(fm.task(states["confirmed"]))
    resources.append(fm.task(states["withdrawn"], had, (Reason.MEDICAL_NOT_ELIGIBLE, "domicile inadapté"),
                             fm.EVALUATION_WITHDRAWN))
    resources.append(_with_step(fm.task(offered), "accepted", fm.PENDING_EVALUATION))
    resources.append(_with_step(fm.task(states["pending evaluation"]), "rejected", fm.EVALUATION_WITHDRAWN))
    answer = {**fm.task(offered), "status": "accepted"}
    resources.append(answer)
    resources.append(fm.bundle([fm.task(offered)], "http://127.0.0.1/fhir"))
    resources.append(fm.bundle([], "http://127.0.0.1/fhir"))
    resources.append(fm.capability_statement("http://127.0.0.1/fhir", "http://127.0.0.1/realms/reflexe", AT))
    resources.append(fm.operation_outcome([("ServiceRequest.code", "unknown MPP code")]))
    for resource in resources:
        validator.assert_valid(resource)
    assert {r["resourceType"] for r in resources} == {"ServiceRequest", "Task", "Bundle", "CapabilityStatement", "OperationOutcome"}


def test_the_validator_does_find_errors(validator):
    """The control: a Task with a status outside FHIR's required value set fails."""
    offered = dict(_in_every_state(unique_finess(), unique_finess()))["offered"]
    verdict = validator.validate({**fm.task(offered), "status": "offered"})
    assert verdict.errors >= 1 and any(i["location"] == "Task.status" for i in verdict.issues)


def test_the_whole_request_renders_as_a_valid_service_request_that_reads_back_the_same(validator):
    """Every field of the data set goes out (EHPAD, prescriber, ED arrival, planned and desired dates,
    consents, avis, sex) to whoever may read the ServiceRequest, and reads back into the same request."""
    from tests.unit.referral.conftest import make_full_request

    request = make_full_request()
    referral = Referral.from_events(Referral.request(request, AT))
    resource = fm.service_request(referral)
    validator.assert_valid(resource)
    body, _ = fm.referral_in_from_service_request(resource)
    again = ReferralIn.model_validate(body).to_domain(request.department, request.referral_id, AT)
    assert again == request


def _evaluation_codes(task: dict) -> list[str]:
    return [c["code"] for c in task["businessStatus"]["coding"] if c["system"] == fm.EVALUATION_SYSTEM]


def _with_step(task: dict, status: str, step: str | None) -> dict:
    """A Task as an HAD sends it back: the status it answers with, the evaluation step in its
    businessStatus beside the referral status it read."""
    codings = [c for c in task["businessStatus"]["coding"] if c["system"] != fm.EVALUATION_SYSTEM]
    if step is not None:
        codings.append({"system": fm.EVALUATION_SYSTEM, "code": step})
    return {**task, "status": status, "businessStatus": {"coding": codings}}


def test_an_acceptance_pending_evaluation_shows_on_the_task_until_confirmed_or_withdrawn():
    hospital, had = unique_finess(), unique_finess()
    states = dict(_in_every_state(hospital, had))
    pending = fm.task(states["pending evaluation"])
    assert (pending["status"], pending["owner"]["identifier"]["value"]) == ("accepted", had)
    assert pending["businessStatus"]["coding"][0]["code"] == Status.ACCEPTED
    assert _evaluation_codes(pending) == [fm.PENDING_EVALUATION]
    assert _evaluation_codes(fm.task(states["accepted"])) == []  # a plain acceptance has no evaluation step
    confirmed = fm.task(states["confirmed"])  # the HAD's answer, and any later read
    assert confirmed["status"] == "accepted" and _evaluation_codes(confirmed) == [fm.EVALUATION_CONFIRMED]
    withdrawn = fm.task(states["withdrawn"], had, (Reason.MEDICAL_NOT_ELIGIBLE, "domicile inadapté"),
                        fm.EVALUATION_WITHDRAWN)
    assert (withdrawn["status"], withdrawn["owner"]["identifier"]["value"]) == ("rejected", had)
    assert [c["code"] for c in withdrawn["businessStatus"]["coding"]] == [fm.EVALUATION_WITHDRAWN]
    assert withdrawn["statusReason"] == {"coding": [{"system": fm.REASON_SYSTEM, "code": "MEDICAL_NOT_ELIGIBLE"}],
                                         "text": "domicile inadapté"}
    assert fm.task(states["withdrawn"])["status"] == "ready"  # the referral itself: back to the search


@pytest.mark.parametrize("status, step, answer", [
    ("accepted", None, fm.TaskAnswer.ACCEPT),
    ("accepted", fm.PENDING_EVALUATION, fm.TaskAnswer.ACCEPT_PENDING_EVALUATION),
    ("accepted", fm.EVALUATION_CONFIRMED, fm.TaskAnswer.CONFIRM_EVALUATION),
    ("rejected", None, fm.TaskAnswer.DECLINE),
    ("rejected", fm.EVALUATION_WITHDRAWN, fm.TaskAnswer.WITHDRAW_ACCEPTANCE),
])
def test_each_task_form_is_one_command(status, step, answer):
    offered = dict(_in_every_state(unique_finess(), unique_finess()))["offered"]
    assert fm.task_answer(_with_step(fm.task(offered), status, step)) is answer
    assert answer.answers_an_offer == (answer in (fm.TaskAnswer.ACCEPT, fm.TaskAnswer.ACCEPT_PENDING_EVALUATION,
                                                  fm.TaskAnswer.DECLINE))


@pytest.mark.parametrize("status, step, expression", [
    ("completed", None, "Task.status"),
    ("cancelled", fm.EVALUATION_WITHDRAWN, "Task.status"),
    ("rejected", fm.PENDING_EVALUATION, "Task.businessStatus"),
    ("rejected", fm.EVALUATION_CONFIRMED, "Task.businessStatus"),
    ("accepted", fm.EVALUATION_WITHDRAWN, "Task.businessStatus"),
    ("accepted", "evaluated", "Task.businessStatus"),
])
def test_a_task_form_that_is_no_command_is_refused_naming_the_element(status, step, expression):
    offered = dict(_in_every_state(unique_finess(), unique_finess()))["offered"]
    with pytest.raises(fm.FhirInvalid) as refused:
        fm.task_answer(_with_step(fm.task(offered), status, step))
    assert refused.value.status == 422 and [e for e, _ in refused.value.problems] == [expression]


def test_two_evaluation_steps_at_once_are_refused():
    offered = dict(_in_every_state(unique_finess(), unique_finess()))["offered"]
    task = _with_step(fm.task(offered), "accepted", fm.PENDING_EVALUATION)
    task["businessStatus"]["coding"].append({"system": fm.EVALUATION_SYSTEM, "code": fm.EVALUATION_CONFIRMED})
    with pytest.raises(fm.FhirInvalid) as refused:
        fm.task_answer(task)
    assert [e for e, _ in refused.value.problems] == ["Task.businessStatus"]


def _incomplete(hospital: str) -> Referral:
    resource = service_request_resource(hospital)
    for extension in resource["extension"]:
        if extension["url"] == fm.EXT_GP_AGREEMENT:
            extension["valueBoolean"] = False
    return referral_from(resource)


def _set_extension(resource: dict, url: str, **value) -> dict:
    resource["extension"] = [e for e in resource["extension"] if e["url"] != url] + [{"url": url, **value}]
    return resource


def test_a_service_request_update_changes_the_consents_only():
    current = _incomplete(unique_finess())
    as_read = fm.service_request(current)
    assert fm.request_update_from_service_request(as_read, current) == {
        "conditions": {"patient_consent": True, "gp_agreement": False, "caregiver_present": True}}
    agreed = _set_extension(copy.deepcopy(as_read), fm.EXT_GP_AGREEMENT, valueBoolean=True)
    agreed["extension"].reverse()  # the order of extensions and of equipment means nothing
    assert fm.request_update_from_service_request(agreed, current)["conditions"]["gp_agreement"] is True
    # The update is the REST PATCH's body: the same schema takes it.
    from reflexe_referral.entrypoints.schemas import RequestUpdateIn
    RequestUpdateIn.model_validate(fm.request_update_from_service_request(agreed, current))


@pytest.mark.parametrize("change, expressions", [
    (lambda r: _set_extension(r, fm.EXT_KARNOFSKY, valueInteger=30), {f"ServiceRequest.extension('{fm.EXT_KARNOFSKY}')"}),
    (lambda r: r.update(code={"coding": [{"system": fm.MPP_SYSTEM, "code": "04"}]}), {"ServiceRequest.code"}),
    (lambda r: r["orderDetail"][0]["coding"][0].update(code="10"), {"ServiceRequest.orderDetail[0]"}),
    (lambda r: r["contained"][0].update(birthDate="1950"), {"ServiceRequest.contained[0].birthDate"}),
    (lambda r: r.update(authoredOn="2026-11-20T08:00:00Z"), {"ServiceRequest.authoredOn"}),
    (lambda r: r.update(identifier=[{"system": fm.REFERRAL_ID_SYSTEM, "value": "6f1f9a52-2d55-4a4e-9b43-9d1d1d1d1d1d"}]),
     {"ServiceRequest.identifier"}),
    (lambda r: r.update(extension=[e for e in r["extension"] if e["url"] != fm.EXT_AVIS]),
     {f"ServiceRequest.extension('{fm.EXT_AVIS}')"}),
    (lambda r: _set_extension(_set_extension(r, fm.EXT_CARE_COMMUNE, valueCode="34150"), fm.EXT_GP_AGREEMENT,
                              valueBoolean=True), {f"ServiceRequest.extension('{fm.EXT_CARE_COMMUNE}')"}),
])
def test_a_service_request_update_changing_anything_else_is_refused_naming_it(change, expressions):
    current = _incomplete(unique_finess())
    resource = fm.service_request(current)
    change(resource)
    with pytest.raises(fm.FhirInvalid) as refused:
        fm.request_update_from_service_request(resource, current)
    assert refused.value.status == 422 and {e for e, _ in refused.value.problems} == expressions
