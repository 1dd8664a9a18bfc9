"""The simulated hospitals' ServiceRequests and HADs' answered Tasks, read by the referral
service's own FHIR mapping: the same referral as the REST body, the same answer as the REST
accept/decline; and valid FHIR R4 for HAPI FHIR's official validator (offline)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from reflexe_common.vocabulary import Reason
from reflexe_referral.domain.model import Referral
from reflexe_referral.entrypoints import fhir as fhir_api
from reflexe_referral.entrypoints import fhir_mapping as fm
from reflexe_referral.entrypoints.schemas import ReferralIn
from reflexe_simulator import fhir
from reflexe_simulator.scenario import build_scenario
from reflexe_simulator.traffic import ReferralFactory
from tests.support.fhir_validator import shared_validator

AT = datetime(2026, 11, 26, 9, tzinfo=UTC)


def _bodies(n: int = 120) -> list[dict]:
    bodies = []
    for code in ("34", "31"):
        factory = ReferralFactory(build_scenario([code], seed=7).departments[code], random.Random(7))
        for i in range(n // 2):
            kind = ("ED", "UHCD", "WARD", "EHPAD", "GP")[i % 5]
            bodies.append(factory.make(kind, AT, AT, 60).body)
    return bodies


def test_a_service_request_is_the_same_referral_as_the_rest_body():
    bodies = _bodies()
    assert any(b["avis"] for b in bodies) and any(b["patient"]["ehpad_finess"] for b in bodies)
    assert any(b["clinical"]["planned_date"] for b in bodies) and any(b["clinical"]["equipment"] for b in bodies)
    for body in bodies:
        read, _ = fm.referral_in_from_service_request(fhir.service_request(body))
        assert ReferralIn.model_validate(read) == ReferralIn.model_validate(body)


def _offered(body: dict, had: str) -> Referral:
    read, _ = fm.referral_in_from_service_request(fhir.service_request(body))
    referral = Referral.from_events(Referral.request(ReferralIn.model_validate(read).to_domain("34", read["referral_id"], AT), AT))
    for event in referral.record_offer("offer-1", had, AT + timedelta(hours=1), "la plus proche", False, AT):
        referral.apply(event)
    return referral


@pytest.mark.parametrize("decision, reason", [("accept", None), ("decline", (Reason.SOCIAL_NOT_ELIGIBLE, "pas d'aidant"))])
def test_an_answered_task_is_the_had_s_answer_to_its_offer(decision, reason):
    had = "349000018"
    task = fm.task(_offered(_bodies(2)[0], had))
    answer = fhir.answered_task(task, "offer-1", decision, str(reason[0]) if reason else None, reason[1] if reason else "")
    fhir_api._check_task_structure(answer)  # the server's own structural check
    assert fm.offer_id_of(answer) == "offer-1" and answer["id"] == task["id"]
    if decision == "accept":
        assert answer["status"] == "accepted" and "statusReason" not in answer
    else:
        assert answer["status"] == "rejected"
        assert fhir_api._decline_reason(answer) == reason
    # The offer answered is the one the HAD was told of, even if the Task read showed another.
    assert fm.offer_id_of(fhir.answered_task({**task, "input": []}, "offer-2", "accept")) == "offer-2"
    with pytest.raises(ValueError):
        fhir.answered_task(task, "offer-1", "decline")


def test_every_resource_the_simulator_sends_is_valid_r4():
    validator = shared_validator()
    bodies = _bodies(20)
    for body in bodies:
        validator.assert_valid(fhir.service_request(body))
    task = fm.task(_offered(bodies[0], "349000018"))
    validator.assert_valid(fhir.answered_task(task, "offer-1", "accept"))
    validator.assert_valid(fhir.answered_task(task, "offer-1", "decline", "NO_CAPACITY", "plus de place ce soir"))
