"""Referral and capacity services together on the real broker and database: a referral is
offered to an HAD whose zone covers the care commune, with a hold; cascade and escalation."""

from __future__ import annotations

import httpx
import pytest

from tests.support.data import unique_finess
from tests.support.platform import post_referral, referral_and_capacity_in_process, register_had
from tests.support.services import eventually, token
from tests.support.territory import own_communes

pytestmark = pytest.mark.integration
# Communes of the Hérault only this module uses: its HADs are the only candidates there.
ACCEPT_COMMUNE, ACCEPT_NEIGHBOUR_COMMUNE, CASCADE_COMMUNE, NO_HAD_COMMUNE = own_communes(4)


@pytest.fixture(scope="module")
async def platform(topics):
    async with referral_and_capacity_in_process(topics) as running:
        yield running.referral, running.capacity


async def wait_status(referral: httpx.AsyncClient, referral_id: str, status: str, offer_not: str | None = None) -> dict:
    desk = token("desk", department="34")

    async def probe():
        body = (await referral.get(f"/v1/referrals/{referral_id}", headers=desk)).json()
        offer = body.get("current_offer")
        if body["status"] == status and (offer_not is None or (offer and offer["offer_id"] != offer_not)):
            return body
        return None

    return await eventually(probe, timeout=30, what=f"referral {referral_id} {status}")


async def test_offered_to_an_had_covering_the_commune_then_accepted(platform):
    referral, capacity = platform
    had = await register_had(capacity, [ACCEPT_COMMUNE], places=2)
    await register_had(capacity, [ACCEPT_NEIGHBOUR_COMMUNE], places=5)  # another zone: must not be chosen
    referral_id = await post_referral(referral, commune=ACCEPT_COMMUNE)
    offered = await wait_status(referral, referral_id, "OFFERED")
    offer = offered["current_offer"]
    assert offer["had_finess"] == had
    assert "Proposé" in offer["explanation"] or had in offer["explanation"]

    board = (await capacity.get("/v1/departments/34/capacity", headers=token("desk", department="34"))).json()
    line = next(h for h in board["hads"] if h["finess"] == had)
    assert line["live_places"] == 1 and line["active_holds"] == 1

    other = await referral.post(f"/v1/referrals/{referral_id}/offers/{offer['offer_id']}/accept",
                                headers=token("had", finess=unique_finess()))
    assert other.status_code == 404 and other.json()["code"] == "UNKNOWN_REFERRAL"  # never offered to it
    accepted = await referral.post(f"/v1/referrals/{referral_id}/offers/{offer['offer_id']}/accept",
                                   headers=token("had", finess=had))
    assert accepted.status_code == 200 and accepted.json()["status"] == "ACCEPTED"
    admitted = await referral.post(f"/v1/referrals/{referral_id}/admission", headers=token("had", finess=had))
    assert admitted.json()["status"] == "ADMITTED"
    cancelled = await referral.post(f"/v1/referrals/{referral_id}/cancel", json={"reason": "OTHER"},
                                    headers=token("desk", department="34"))
    assert cancelled.status_code == 409 and cancelled.json()["code"] == "INVALID_STATE"


async def test_decline_cascades_to_the_next_had_then_escalates(platform):
    referral, capacity = platform
    first = await register_had(capacity, [CASCADE_COMMUNE], places=3, ehpad_conventions=[])
    second = await register_had(capacity, [CASCADE_COMMUNE], places=1)
    referral_id = await post_referral(referral, commune=CASCADE_COMMUNE)
    offer = (await wait_status(referral, referral_id, "OFFERED"))["current_offer"]
    # Most free places relative to size first: 3/40 beats 1/40.
    assert offer["had_finess"] == first
    declined = await referral.post(f"/v1/referrals/{referral_id}/offers/{offer['offer_id']}/decline",
                                   json={"reason": "NO_CAPACITY", "text": "équipe complète"}, headers=token("had", finess=first))
    assert declined.status_code == 200
    offer2 = (await wait_status(referral, referral_id, "OFFERED", offer_not=offer["offer_id"]))["current_offer"]
    assert offer2["had_finess"] == second
    await referral.post(f"/v1/referrals/{referral_id}/offers/{offer2['offer_id']}/decline",
                        json={"reason": "CARE_NOT_PROVIDED"}, headers=token("had", finess=second))
    escalated = await wait_status(referral, referral_id, "ESCALATED")
    assert sorted(escalated["tried_hads"]) == sorted([first, second])
    timeline = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=token("desk", department="34"))).json()
    assert [e["type"] for e in timeline["events"]] == [
        "ReferralRequested", "OfferMade", "OfferDeclined", "OfferMade", "OfferDeclined", "ReferralEscalated"]


async def test_no_had_for_the_commune_escalates(platform):
    referral, _ = platform
    referral_id = await post_referral(referral, commune=NO_HAD_COMMUNE)
    body = await wait_status(referral, referral_id, "ESCALATED")
    assert body["current_offer"] is None
