"""The coordination desk steering referrals of its department, on the real broker and database
(referral and capacity services in-process): offer to a chosen HAD, widen the search to a
neighbouring department, close. Every desk action leaves an audit row, accepted or refused; a
desk of another department is refused before anything happens."""

from __future__ import annotations

import json
import uuid

import asyncpg
import httpx
import pytest

from tests.support.platform import post_referral, referral_and_capacity_in_process, register_had
from tests.support.services import eventually, token
from tests.support.territory import own_commune, own_communes

pytestmark = pytest.mark.integration
DESK_34 = token("desk", department="34")
DESK_31 = token("desk", department="31")
DESK_30 = token("desk", department="30")
# Communes of the Hérault (34) only this module uses: ESCALATION_COMMUNE no HAD serves, ELSEWHERE_COMMUNE
# the zone of the HAD the desk picks, BORDER_COMMUNE served by an HAD of the neighbouring Gard (30) only,
# beside GARD_COMMUNE across the border.
ESCALATION_COMMUNE, ELSEWHERE_COMMUNE, BORDER_COMMUNE, CLOSE_COMMUNE, DOUBLE_CLICK_COMMUNE = own_communes(5)
GARD_COMMUNE = own_commune("30")


@pytest.fixture(scope="module")
async def platform(topics):
    async with referral_and_capacity_in_process(topics) as running:
        await running.close_hads_serving([ESCALATION_COMMUNE, ELSEWHERE_COMMUNE, BORDER_COMMUNE, CLOSE_COMMUNE,
                                          DOUBLE_CLICK_COMMUNE])
        # A new matcher first re-reads what its group had not committed: wait for it.
        await wait_status(running.referral, await post_referral(running.referral, ESCALATION_COMMUNE), "ESCALATED",
                          timeout=240)
        yield running.referral, running.capacity, running.database


async def wait_status(referral: httpx.AsyncClient, referral_id: str, status: str, timeout: float = 30) -> dict:
    async def probe():
        body = (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK_34)).json()
        return body if body["status"] == status else None

    return await eventually(probe, timeout=timeout, interval=0.1, what=f"referral {referral_id} {status}")


async def audit(conn: asyncpg.Connection, referral_id: str) -> list[dict]:
    # Commands only (reads of the referral are in the same trail, under their route).
    rows = await conn.fetch("SELECT actor, action, CASE WHEN status < 400 THEN 'done' ELSE 'refused' END AS outcome, detail "
                            "FROM referral.audit_trail WHERE referral_ids @> ARRAY[$1::uuid] AND action NOT LIKE '% %' "
                            "ORDER BY id", uuid.UUID(referral_id))
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


async def test_desk_offers_an_escalated_referral_to_a_chosen_had(platform):
    referral, capacity, conn = platform
    referral_id = await post_referral(referral, ESCALATION_COMMUNE)
    await wait_status(referral, referral_id, "ESCALATED")
    # The desk knows an HAD that agreed on the phone, though the commune is outside its zone.
    chosen = await register_had(capacity, [ELSEWHERE_COMMUNE], places=2)

    other_desk = await referral.post(f"/v1/referrals/{referral_id}/desk/offer", json={"had_finess": chosen},
                                     headers=DESK_31)
    assert other_desk.status_code == 404 and other_desk.json()["code"] == "UNKNOWN_REFERRAL"
    response = await referral.post(f"/v1/referrals/{referral_id}/desk/offer", json={"had_finess": chosen},
                                   headers=DESK_34)
    assert response.status_code == 200, response.text
    offered = await wait_status(referral, referral_id, "OFFERED")
    assert offered["current_offer"]["had_finess"] == chosen and offered["current_offer"]["by_desk"] is True
    timeline = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=DESK_34)).json()["events"]
    desk_events = [e for e in timeline if e["type"] in ("DeskOfferRequested", "OfferMade")]
    assert [(e["type"], e["actor"]) for e in desk_events] == [("DeskOfferRequested", "desk:34"), ("OfferMade", "desk:34")]
    hold = await conn.fetchrow("SELECT had_finess, state, by_desk FROM capacity.holds WHERE hold_id = $1",
                               offered["current_offer"]["offer_id"])
    assert dict(hold) == {"had_finess": chosen, "state": "ACTIVE", "by_desk": True}

    # While the HAD has not answered, a second desk pick is refused, and audited as such.
    refused = await referral.post(f"/v1/referrals/{referral_id}/desk/offer", json={"had_finess": chosen},
                                  headers=DESK_34)
    assert refused.status_code == 409 and refused.json()["code"] == "OFFER_PENDING"
    assert (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK_34)).json()["version"] == offered["version"]
    assert await audit(conn, referral_id) == [
        {"actor": "desk:34", "action": "desk.offer", "outcome": "done", "detail": {}},
        {"actor": "desk:34", "action": "desk.offer", "outcome": "refused", "detail": {"code": "OFFER_PENDING"}},
    ]


async def test_desk_widens_the_search_to_the_neighbouring_department(platform):
    referral, capacity, conn = platform
    # An HAD of the Hérault elsewhere, and one of the Gard whose zone crosses the river.
    await register_had(capacity, [ELSEWHERE_COMMUNE], places=2)
    gard = await register_had(capacity, [GARD_COMMUNE, BORDER_COMMUNE], places=2, department="30")
    referral_id = await post_referral(referral, BORDER_COMMUNE)
    escalated = await wait_status(referral, referral_id, "ESCALATED")  # the Gard is not searched yet
    assert escalated["departments_searched"] == ["34"]

    other_desk = await referral.post(f"/v1/referrals/{referral_id}/desk/widen", json={"departments": ["30"]},
                                     headers=DESK_31)
    assert other_desk.status_code == 404 and other_desk.json()["code"] == "UNKNOWN_REFERRAL"
    response = await referral.post(f"/v1/referrals/{referral_id}/desk/widen", json={"departments": ["30"]},
                                   headers=DESK_34)
    assert response.status_code == 200, response.text
    assert response.json()["departments_searched"] == ["30", "34"]
    offered = await wait_status(referral, referral_id, "OFFERED")
    assert offered["current_offer"]["had_finess"] == gard and offered["current_offer"]["by_desk"] is False
    again = await referral.post(f"/v1/referrals/{referral_id}/desk/widen", json={"departments": ["30"]},
                                headers=DESK_34)
    assert again.status_code == 409 and again.json()["code"] == "OFFER_PENDING"
    assert await audit(conn, referral_id) == [
        {"actor": "desk:34", "action": "desk.widen", "outcome": "done", "detail": {}},
        {"actor": "desk:34", "action": "desk.widen", "outcome": "refused", "detail": {"code": "OFFER_PENDING"}},
    ]

    # The Gard's desk now finds it in its queue and may read it; it does not steer it. A desk it
    # was not widened to still does not know it exists.
    queue_30 = await referral.get("/v1/departments/30/referrals", headers=DESK_30, params={"limit": 200})
    assert queue_30.status_code == 200, queue_30.text
    assert referral_id in [r["referral_id"] for r in queue_30.json()["referrals"]]
    assert (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK_30)).json()["department"] == "34"
    assert (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK_31)).status_code == 404
    queue_31 = (await referral.get("/v1/departments/31/referrals", headers=DESK_31, params={"limit": 200})).json()
    assert referral_id not in [r["referral_id"] for r in queue_31["referrals"]]
    neighbour = await referral.post(f"/v1/referrals/{referral_id}/desk/close", headers=DESK_30,
                                    json={"reason": "OTHER", "text": "pas le nôtre"})
    assert neighbour.status_code == 403 and neighbour.json()["code"] == "NOT_THE_REFERRAL_DESK"

    # The desk closes it (e.g. the patient stays in hospital): CANCELLED, the Gard's hold given back.
    other_desk = await referral.post(f"/v1/referrals/{referral_id}/desk/close", headers=DESK_31,
                                     json={"reason": "PATIENT_HOSPITALISED", "text": "reste en USC"})
    assert other_desk.status_code == 404
    closed = await referral.post(f"/v1/referrals/{referral_id}/desk/close", headers=DESK_34,
                                 json={"reason": "PATIENT_HOSPITALISED", "text": "reste en USC"})
    assert closed.status_code == 200 and closed.json()["status"] == "CANCELLED"
    queue_30 = (await referral.get("/v1/departments/30/referrals", headers=DESK_30, params={"limit": 200})).json()
    assert referral_id not in [r["referral_id"] for r in queue_30["referrals"]]  # closed: off every queue

    async def released():
        return await conn.fetchval("SELECT state = 'RELEASED' FROM capacity.holds WHERE hold_id = $1",
                                   offered["current_offer"]["offer_id"])

    await eventually(released, timeout=30, what="the Gard HAD's hold released")
    actions = [(a["action"], a["outcome"]) for a in await audit(conn, referral_id)]
    assert actions[-1] == ("desk.close", "done")


async def test_desk_closes_a_referral_with_a_reason(platform):
    referral, _, conn = platform
    referral_id = await post_referral(referral, CLOSE_COMMUNE)
    await wait_status(referral, referral_id, "ESCALATED")
    response = await referral.post(f"/v1/referrals/{referral_id}/desk/close", headers=DESK_34,
                                   json={"reason": "PATIENT_DECEASED", "text": "décédé aux urgences"})
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    timeline = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=DESK_34)).json()["events"]
    cancelled = timeline[-1]
    assert (cancelled["type"], cancelled["actor"], cancelled["reason"], cancelled["text"]) == (
        "ReferralCancelled", "desk:34", "PATIENT_DECEASED", "décédé aux urgences")
    # Closed is closed: widening it now is refused, and audited.
    refused = await referral.post(f"/v1/referrals/{referral_id}/desk/widen", json={"departments": ["30"]}, headers=DESK_34)
    assert refused.status_code == 409 and refused.json()["code"] == "ALREADY_CLOSED"
    assert await audit(conn, referral_id) == [
        {"actor": "desk:34", "action": "desk.close", "outcome": "done", "detail": {}},
        {"actor": "desk:34", "action": "desk.widen", "outcome": "refused", "detail": {"code": "ALREADY_CLOSED"}},
    ]


async def test_a_double_clicked_desk_offer_holds_one_place_and_is_handled(platform):
    """Two desk picks sent before the first offer is back: the referral service accepts both (the
    referral is still ESCALATED); the matcher holds one place and handles the second as a no-op
    (it must not fail on it and dead-letter it)."""
    referral, capacity, conn = platform
    referral_id = await post_referral(referral, DOUBLE_CLICK_COMMUNE)
    await wait_status(referral, referral_id, "ESCALATED")
    chosen = await register_had(capacity, [ELSEWHERE_COMMUNE], places=2)
    clicks = [await referral.post(f"/v1/referrals/{referral_id}/desk/offer", json={"had_finess": chosen}, headers=DESK_34)
              for _ in range(2)]
    assert [c.status_code for c in clicks] == [200, 200], [c.text for c in clicks]
    offered = await wait_status(referral, referral_id, "OFFERED")
    assert offered["current_offer"]["had_finess"] == chosen
    requests = [str(r["event_id"]) for r in await conn.fetch(
        "SELECT event_id FROM referral.referral_events WHERE referral_id = $1 AND type = 'reflexe.v1.DeskOfferRequested'",
        uuid.UUID(referral_id))]
    assert len(requests) == 2

    async def both_handled():  # a record that failed is dead-lettered and never enters the inbox
        return await conn.fetchval("SELECT count(*) = 2 FROM capacity.inbox WHERE consumer = 'matcher' AND event_id = ANY($1)",
                                   requests)

    await eventually(both_handled, timeout=30, what="both desk picks handled by the matcher")
    holds = await conn.fetch("SELECT had_finess, state FROM capacity.holds WHERE referral_id = $1", uuid.UUID(referral_id))
    assert [(h["had_finess"], h["state"]) for h in holds] == [(chosen, "ACTIVE")]
