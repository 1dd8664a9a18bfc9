"""The liaison nurse's evaluation before admission, with the referral and capacity services on the
real broker and database: the avis HAD given after posting, an acceptance pending evaluation that
keeps the place, then confirmed (admission as usual) or withdrawn (place released, next HAD offered)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.data import unique_finess
from tests.support.platform import post_referral, referral_and_capacity_in_process, register_had
from tests.support.services import eventually, token
from tests.support.territory import own_communes

pytestmark = pytest.mark.integration
DESK = token("desk", department="34")
# Communes only this module uses.
WITHDRAWAL_COMMUNE, CONFIRMATION_COMMUNE, NO_HAD_COMMUNE = own_communes(3)


@pytest.fixture(scope="module")
async def platform(topics):
    async with referral_and_capacity_in_process(topics) as running:
        yield running.referral, running.capacity


async def offered_to(referral: httpx.AsyncClient, referral_id: str, had: str) -> dict:
    async def probe():
        body = (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK)).json()
        offer = body.get("current_offer")
        return body if body["status"] == "OFFERED" and offer and offer["had_finess"] == had else None

    return (await eventually(probe, timeout=60, what=f"referral {referral_id} offered to {had}"))["current_offer"]


async def live_places(capacity: httpx.AsyncClient, had: str) -> int:
    board = (await capacity.get("/v1/departments/34/capacity", headers=DESK)).json()
    return next(h for h in board["hads"] if h["finess"] == had)["live_places"]


async def test_a_liaison_gives_the_avis_then_the_had_accepts_pending_evaluation_and_withdraws(platform):
    referral, capacity = platform
    first = await register_had(capacity, [WITHDRAWAL_COMMUNE], places=3)
    second = await register_had(capacity, [WITHDRAWAL_COMMUNE], places=1)
    referral_id = await post_referral(referral, WITHDRAWAL_COMMUNE)
    offer = await offered_to(referral, referral_id, first)  # most free places for its size first

    liaison = token("liaison", finess=first, department="34")
    avis = await referral.post(f"/v1/referrals/{referral_id}/avis", headers=liaison,
                               json={"eligible": True, "text": "domicile adapté, aidant présent"})
    assert avis.status_code == 200, avis.text
    assert avis.json()["current_avis"] == {"eligible": True, "reason": None, "text": "domicile adapté, aidant présent"}
    elsewhere = await referral.post(f"/v1/referrals/{referral_id}/avis", json={"eligible": True},
                                    headers=token("liaison", finess=unique_finess("13"), department="13"))
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (404, "UNKNOWN_REFERRAL")
    not_a_liaison = await referral.post(f"/v1/referrals/{referral_id}/avis", json={"eligible": True},
                                        headers=token("had", finess=first))
    assert (not_a_liaison.status_code, not_a_liaison.json()["code"]) == (403, "ROLE_FORBIDDEN")

    as_first = token("had", finess=first)
    pending = await referral.post(f"/v1/referrals/{referral_id}/offers/{offer['offer_id']}/accept-pending-evaluation",
                                  headers=as_first)
    assert pending.status_code == 200, pending.text
    assert (pending.json()["status"], pending.json()["evaluation_pending"]) == ("ACCEPTED", True)
    assert [c["kind"] for c in pending.json()["clocks"]] == ["ADMISSION_OVERDUE"]  # no hold expiry while evaluating
    assert await eventually(lambda: _places_are(capacity, first, 2), timeout=30, what="the place kept while evaluating")
    too_early = await referral.post(f"/v1/referrals/{referral_id}/admission", headers=as_first)
    assert (too_early.status_code, too_early.json()["code"]) == (409, "EVALUATION_PENDING")

    withdrawn = await referral.post(f"/v1/referrals/{referral_id}/evaluation/withdraw", headers=as_first,
                                    json={"reason": "MEDICAL_NOT_ELIGIBLE", "text": "état instable à la visite"})
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "REQUESTED" and withdrawn.json()["accepted_had"] is None
    await offered_to(referral, referral_id, second)  # the cascade, as after a decline
    assert await eventually(lambda: _places_are(capacity, first, 3), timeout=30, what="the withdrawn place released")
    again = await referral.post(f"/v1/referrals/{referral_id}/evaluation/confirm", headers=as_first)
    assert (again.status_code, again.json()["code"]) == (409, "NOT_ACCEPTED"), again.text

    timeline = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=DESK)).json()["events"]
    assert [e["type"] for e in timeline] == ["ReferralRequested", "OfferMade", "AvisGiven", "OfferAccepted",
                                             "AcceptanceWithdrawn", "OfferMade"]
    assert timeline[2]["actor"] == f"liaison:{first}" and timeline[3]["pending_evaluation"] is True
    assert timeline[4]["actor"] == f"had:{first}" and timeline[4]["reason"] == "MEDICAL_NOT_ELIGIBLE"


async def _places_are(capacity: httpx.AsyncClient, had: str, places: int) -> bool | None:
    return True if await live_places(capacity, had) == places else None


async def test_a_confirmed_evaluation_leads_to_the_admission(platform):
    referral, capacity = platform
    had = await register_had(capacity, [CONFIRMATION_COMMUNE], places=2)
    referral_id = await post_referral(referral, CONFIRMATION_COMMUNE)
    offer = await offered_to(referral, referral_id, had)
    as_had = token("had", finess=had)
    pending = await referral.post(f"/v1/referrals/{referral_id}/offers/{offer['offer_id']}/accept-pending-evaluation",
                                  headers=as_had)
    assert pending.status_code == 200, pending.text
    other = await referral.post(f"/v1/referrals/{referral_id}/evaluation/confirm", headers=token("had", finess=unique_finess()))
    assert (other.status_code, other.json()["code"]) == (404, "UNKNOWN_REFERRAL")
    confirmed = await referral.post(f"/v1/referrals/{referral_id}/evaluation/confirm", headers=as_had)
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["status"], confirmed.json()["evaluation_pending"]) == ("ACCEPTED", False)
    twice = await referral.post(f"/v1/referrals/{referral_id}/evaluation/confirm", headers=as_had)
    assert (twice.status_code, twice.json()["code"]) == (409, "NO_PENDING_EVALUATION")
    admitted = await referral.post(f"/v1/referrals/{referral_id}/admission", headers=as_had)
    assert admitted.status_code == 200 and admitted.json()["status"] == "ADMITTED", admitted.text


async def test_an_unfavourable_avis_while_the_search_goes_on_closes_the_referral(platform):
    referral, _ = platform
    referral_id = await post_referral(referral, NO_HAD_COMMUNE)

    async def escalated():
        body = (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK)).json()
        return body if body["status"] == "ESCALATED" else None

    await eventually(escalated, timeout=60, what="the referral escalated (no HAD serves its commune)")
    liaison = token("liaison", finess=unique_finess(), department="34")
    no_reason = await referral.post(f"/v1/referrals/{referral_id}/avis", json={"eligible": False}, headers=liaison)
    assert no_reason.status_code == 422 and no_reason.json()["errors"][0]["field"] == "body.reason", no_reason.text
    given = await referral.post(f"/v1/referrals/{referral_id}/avis", headers=liaison,
                                json={"eligible": False, "reason": "SOCIAL_NOT_ELIGIBLE", "text": "vit seul, sans aidant"})
    assert given.status_code == 200, given.text
    assert given.json()["status"] == "INELIGIBLE" and given.json()["closed_reason"] == "SOCIAL_NOT_ELIGIBLE"
    later = await referral.post(f"/v1/referrals/{referral_id}/avis", json={"eligible": True}, headers=liaison)
    assert (later.status_code, later.json()["code"]) == (409, "ALREADY_CLOSED")
