"""Consents as conditions on the real broker and database (referral and capacity services
in-process): a referral lacking the GP's agreement waits as INCOMPLETE in the desk's queue and is
not offered; the versioned update (If-Match on the ETag) that supplies it starts the search, and
the timeline records who made it."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from tests.support.data import referral_body, unique_finess
from tests.support.platform import referral_and_capacity_in_process, register_had
from tests.support.services import eventually, token
from tests.support.territory import own_communes

pytestmark = pytest.mark.integration
DESK_34 = token("desk", department="34")
DESK_31 = token("desk", department="31")
COMMUNES = WAITING_COMMUNE, DESK_COMMUNE, REFUSED_COMMUNE = own_communes(3)  # of the Hérault, only this module's


@pytest.fixture(scope="module")
async def platform(topics):
    async with referral_and_capacity_in_process(topics) as running:
        await running.close_hads_serving(list(COMMUNES))
        yield running.referral, running.capacity, running.database


async def post(referral: httpx.AsyncClient, hospital: str, commune: str, **conditions: bool) -> dict:
    body = referral_body(hospital, commune, conditions=conditions)
    response = await referral.post("/v1/referrals", json=body, headers=token("hospital", finess=hospital))
    assert response.status_code == 201, response.text
    return response.json()


async def wait_status(referral: httpx.AsyncClient, referral_id: str, status: str, timeout: float = 60) -> dict:
    async def probe():
        body = (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK_34)).json()
        return body if body["status"] == status else None

    return await eventually(probe, timeout=timeout, interval=0.1, what=f"referral {referral_id} {status}")


async def queue_row(referral: httpx.AsyncClient, referral_id: str) -> dict:
    """The referral's row in department 34's queue, walking its pages (other tests' referrals share it)."""
    offset: int | None = 0
    while offset is not None:
        page = await referral.get("/v1/departments/34/referrals", headers=DESK_34, params={"limit": 200, "offset": offset})
        assert page.status_code == 200, page.text
        for row in page.json()["referrals"]:
            if row["referral_id"] == referral_id:
                return row
        offset = page.json()["next_offset"]
    raise AssertionError(f"referral {referral_id} is not in the desk's queue")


async def holds_of(conn: asyncpg.Connection, referral_id: str) -> int:
    return await conn.fetchval("SELECT count(*) FROM capacity.holds WHERE referral_id = $1", uuid.UUID(referral_id))


async def test_a_referral_waits_without_gp_agreement_and_is_offered_once_its_hospital_gives_it(platform):
    referral, capacity, conn = platform
    had = await register_had(capacity, [WAITING_COMMUNE], places=5)
    hospital = unique_finess()
    hospital_token = token("hospital", finess=hospital)

    waiting = await post(referral, hospital, WAITING_COMMUNE, gp_agreement=False)
    assert waiting["status"] == "INCOMPLETE" and waiting["missing_conditions"] == ["gp_agreement"]
    assert [c["kind"] for c in waiting["clocks"]] == ["ADMISSION_OVERDUE"]  # no offer clock runs
    referral_id = waiting["referral_id"]
    # A complete referral posted after it, on the same department's partition, is offered: the
    # matcher has read the incomplete one by then, and held nothing for it.
    complete = await post(referral, hospital, WAITING_COMMUNE)
    offered = await wait_status(referral, complete["referral_id"], "OFFERED")
    assert offered["current_offer"]["had_finess"] == had
    assert await holds_of(conn, referral_id) == 0
    assert (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK_34)).json()["status"] == "INCOMPLETE"

    # The desk sees it in its queue, with what it lacks.
    row = await queue_row(referral, referral_id)
    assert row["status"] == "INCOMPLETE" and row["missing_conditions"] == ["gp_agreement"]

    read = await referral.get(f"/v1/referrals/{referral_id}", headers=hospital_token)
    assert read.status_code == 200 and read.headers["ETag"] == '"1"'
    url = f"/v1/referrals/{referral_id}/request"
    update = {"conditions": {"gp_agreement": True}}

    missing = await referral.patch(url, json=update, headers=hospital_token)
    assert missing.status_code == 428, missing.text
    assert missing.json()["code"] == "PRECONDITION_REQUIRED"
    assert missing.json()["errors"][0]["field"] == "header.If-Match"
    stale = await referral.patch(url, json=update, headers={**hospital_token, "If-Match": '"0"'})
    assert stale.status_code == 412, stale.text
    assert stale.json()["code"] == "STALE_VERSION" and stale.json()["errors"][0]["field"] == "header.If-Match"
    other_hospital = unique_finess()
    foreign = await referral.patch(url, json=update, headers={**token("hospital", finess=other_hospital), "If-Match": '"1"'})
    assert foreign.status_code == 404 and foreign.json()["code"] == "UNKNOWN_REFERRAL"
    by_had = await referral.patch(url, json=update, headers={**token("had", finess=had), "If-Match": '"1"'})
    assert by_had.status_code == 403, by_had.text
    # Nothing of the refusals changed it.
    assert (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK_34)).headers["ETag"] == '"1"'

    updated = await referral.patch(url, json=update, headers={**hospital_token, "If-Match": read.headers["ETag"]})
    assert updated.status_code == 200, updated.text
    assert updated.headers["ETag"] == '"3"'
    assert updated.json()["conditions"]["gp_agreement"] is True and updated.json()["missing_conditions"] == []
    offered = await wait_status(referral, referral_id, "OFFERED")
    assert offered["current_offer"]["had_finess"] == had

    timeline = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=hospital_token)).json()["events"]
    assert [e["type"] for e in timeline[:4]] == ["ReferralRequested", "ReferralRequestUpdated", "ReferralCompleted",
                                                 "OfferMade"]
    change = timeline[1]
    assert change["actor"] == f"hospital:{hospital}"
    assert change["changed_fields"] == ["conditions.gp_agreement"] and change["missing_conditions"] == []
    # The same update again names a version that is gone.
    again = await referral.patch(url, json=update, headers={**hospital_token, "If-Match": '"1"'})
    assert again.status_code == 412


async def test_the_desk_of_its_department_may_record_the_gp_agreement(platform):
    referral, capacity, _ = platform
    had = await register_had(capacity, [DESK_COMMUNE], places=5)
    waiting = await post(referral, unique_finess(), DESK_COMMUNE, patient_consent=True, gp_agreement=False)
    url = f"/v1/referrals/{waiting['referral_id']}/request"
    update = {"conditions": {"gp_agreement": True}}

    elsewhere = await referral.patch(url, json=update, headers={**DESK_31, "If-Match": '"1"'})
    assert elsewhere.status_code == 404
    # The FHIR weak form of the ETag is understood as well.
    done = await referral.patch(url, json=update, headers={**DESK_34, "If-Match": 'W/"1"'})
    assert done.status_code == 200, done.text
    assert done.json()["status"] in ("REQUESTED", "OFFERED")
    assert (await wait_status(referral, waiting["referral_id"], "OFFERED"))["current_offer"]["had_finess"] == had
    timeline = (await referral.get(f"/v1/referrals/{waiting['referral_id']}/timeline", headers=DESK_34)).json()["events"]
    assert [(e["type"], e["actor"]) for e in timeline[1:3]] == [("ReferralRequestUpdated", "desk:34"),
                                                               ("ReferralCompleted", "desk:34")]


async def test_a_consent_given_is_not_withdrawn_by_an_update_and_bad_input_names_the_field(platform):
    referral, _, _ = platform
    hospital = unique_finess()
    headers = token("hospital", finess=hospital)
    posted = await post(referral, hospital, REFUSED_COMMUNE, patient_consent=True, gp_agreement=False)
    url = f"/v1/referrals/{posted['referral_id']}/request"

    withdrawn = await referral.patch(url, json={"conditions": {"patient_consent": False}},
                                     headers={**headers, "If-Match": '"1"'})
    assert withdrawn.status_code == 409 and withdrawn.json()["code"] == "CONDITION_WITHDRAWN"
    unknown_field = await referral.patch(url, json={"conditions": {"gp_agreement": True}, "patient": {"birth_year": 1950}},
                                         headers={**headers, "If-Match": '"1"'})
    assert unknown_field.status_code == 422
    assert any(e["field"] == "body.patient" for e in unknown_field.json()["errors"])
    bad_etag = await referral.patch(url, json={"conditions": {"gp_agreement": True}},
                                    headers={**headers, "If-Match": "yesterday"})
    assert bad_etag.status_code == 422 and bad_etag.json()["errors"][0]["field"] == "header.If-Match"
    still = (await referral.get(f"/v1/referrals/{posted['referral_id']}", headers=headers)).json()
    assert still["status"] == "INCOMPLETE" and still["version"] == 1
