"""The audit trail on the real broker and database (the referral service in-process): reads of
referrals and refusals are recorded with the caller's token subject, the table refuses UPDATE,
DELETE and TRUNCATE, and GET /v1/audit filters, paginates and is scoped to admins and the ARS."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from reflexe_referral.entrypoints.app import build_app
from reflexe_referral.settings import ReferralSettings
from tests.support.data import referral_body, unique_finess
from tests.support.issuer import suite_issuer
from tests.support.platform import in_process_env
from tests.support.services import eventually, serve_in_process, token

pytestmark = pytest.mark.integration
OCCITANIE = "76"  # region of Hérault (34)
ILE_DE_FRANCE = "11"


def person(role: str, **scope: str) -> tuple[str, dict[str, str]]:
    """A caller with a subject of its own (the token's sub) and its Authorization header."""
    subject = f"{role}-{uuid.uuid4().hex[:12]}"
    return subject, {"Authorization": f"Bearer {suite_issuer().token(role, subject=subject, **scope)}"}


@pytest.fixture(scope="module")
async def service(topics):
    settings = ReferralSettings(**in_process_env(topics))
    async with serve_in_process(build_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        conn = await asyncpg.connect(topics.database_url)
        try:
            yield client, conn
        finally:
            await conn.close()


async def post_referral(client: httpx.AsyncClient) -> str:
    hospital = unique_finess()
    response = await client.post("/v1/referrals", json=referral_body(hospital), headers=token("hospital", finess=hospital))
    assert response.status_code == 201, response.text
    return response.json()["referral_id"]


async def audit_entries(client: httpx.AsyncClient, headers=None, **query) -> list[dict]:
    response = await client.get("/v1/audit", params=query, headers=headers or token("admin"))
    assert response.status_code == 200, response.text
    return response.json()["entries"]


async def until_audited(client: httpx.AsyncClient, expected: int = 1, **query) -> list[dict]:
    """The writer batches in the background: poll until the entries are there."""
    async def probe():
        entries = await audit_entries(client, **query)
        return entries if len(entries) >= expected else None

    return await eventually(probe, timeout=20, what=f"{expected} audit entries for {query}")


async def test_a_desk_reading_a_referral_is_audited_with_its_subject(service):
    client, _ = service
    referral_id = await post_referral(client)
    desk, desk_headers = person("desk", department="34")

    assert (await client.get(f"/v1/referrals/{referral_id}", headers=desk_headers)).status_code == 200
    assert (await client.get(f"/v1/referrals/{referral_id}/timeline", headers=desk_headers)).status_code == 200
    queue = await client.get("/v1/departments/34/referrals", headers=desk_headers)
    assert queue.status_code == 200, queue.text

    entries = await until_audited(client, 3, subject=desk)
    by_action = {e["action"]: e for e in entries}
    one = by_action["GET /v1/referrals/{referral_id}"]
    assert one["actor"] == "desk:34" and one["department"] == "34" and one["referral_ids"] == [referral_id]
    assert (one["status"], one["code"]) == (200, "OK")
    assert by_action["GET /v1/referrals/{referral_id}/timeline"]["referral_ids"] == [referral_id]
    # The queue is one entry listing the referrals it returned, not one entry per referral.
    listed = by_action["GET /v1/departments/{department}/referrals"]
    assert listed["department"] == "34"
    assert sorted(listed["referral_ids"]) == sorted(r["referral_id"] for r in queue.json()["referrals"])
    # By referral id: found through the ids listed by the queue read as well.
    assert {e["subject"] for e in await audit_entries(client, referral_id=referral_id)} >= {desk}


async def test_refusals_are_audited_centrally(service):
    client, _ = service
    referral_id = await post_referral(client)
    had, had_headers = person("had", finess=unique_finess())
    refused = await client.get("/v1/departments/34/referrals", headers=had_headers)
    assert refused.status_code == 403, refused.text

    (entry,) = await until_audited(client, subject=had)
    assert entry["action"] == "GET /v1/departments/{department}/referrals" and entry["actor"].startswith("had:")
    assert (entry["status"], entry["code"]) == (403, refused.json()["code"])
    assert entry["department"] == "34" and entry["referral_ids"] == []

    # Without a token: anonymous, the route template only (never the URL with its query).
    before = datetime.now(UTC) - timedelta(seconds=1)
    missing = await client.get(f"/v1/referrals/{referral_id}?secret=x")
    assert missing.status_code == 401
    entries = await until_audited(client, subject="anonymous", status=401, referral_id=referral_id,
                                  since=before.isoformat())
    assert entries[0]["action"] == "GET /v1/referrals/{referral_id}" and entries[0]["code"] == "MISSING_TOKEN"

    # A command refused by the domain (409) is one entry, written by the command's transaction.
    desk, desk_headers = person("desk", department="34")
    closed = await client.post(f"/v1/referrals/{referral_id}/desk/close", headers=desk_headers,
                               json={"reason": "PATIENT_HOSPITALISED"})
    assert closed.status_code == 200, closed.text
    again = await client.post(f"/v1/referrals/{referral_id}/desk/close", headers=desk_headers,
                              json={"reason": "PATIENT_HOSPITALISED"})
    assert again.status_code == 409, again.text
    entries = await until_audited(client, 2, subject=desk)
    assert [(e["action"], e["status"]) for e in entries] == [("desk.close", 409), ("desk.close", 200)]
    assert entries[0]["code"] == again.json()["code"]


async def test_the_trail_is_append_only(service):
    client, conn = service
    _, headers = person("desk", department="34")
    await client.get("/v1/departments/34/referrals", headers=headers)
    await until_audited(client, action="GET /v1/departments/{department}/referrals")
    for statement in ("UPDATE referral.audit_trail SET subject = 'someone-else'",
                      "DELETE FROM referral.audit_trail",
                      "DELETE FROM referral.audit_trail WHERE false",
                      "TRUNCATE referral.audit_trail"):
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute(statement)


async def test_the_api_filters_paginates_and_is_scoped(service):
    client, _ = service
    referral_id = await post_referral(client)
    desk, desk_headers = person("desk", department="34")
    for _ in range(5):
        assert (await client.get(f"/v1/referrals/{referral_id}", headers=desk_headers)).status_code == 200
    assert (await client.get("/v1/departments/31/referrals", headers=desk_headers)).status_code == 403
    await until_audited(client, 6, subject=desk)

    # Pages of 2, newest first, through the cursor: every entry once.
    seen, cursor = [], None
    while True:
        params = {"subject": desk, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/audit", params=params, headers=token("admin"))).json()
        assert len(page["entries"]) <= 2
        seen += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [int(e["id"]) for e in seen]
    assert len(seen) == 6 and ids == sorted(ids, reverse=True) and len(set(ids)) == 6

    assert len(await audit_entries(client, subject=desk, status=200)) == 5
    refused = await audit_entries(client, subject=desk, status=403)
    assert [(e["department"], e["code"]) for e in refused] == [("31", "OUT_OF_SCOPE")]
    assert len(await audit_entries(client, subject=desk, department="34", action="GET /v1/referrals/{referral_id}")) == 5
    assert await audit_entries(client, subject=desk, until=(datetime.now(UTC) - timedelta(hours=1)).isoformat()) == []
    assert len(await audit_entries(client, subject=desk, since=(datetime.now(UTC) - timedelta(hours=1)).isoformat())) == 6

    # The ARS sees its region's departments only; entries without a department are admins'.
    _, ars = person("ars", region=OCCITANIE)
    assert len(await audit_entries(client, ars, subject=desk)) == 6
    # A refusal that names no department (here: no token on the audit API itself) is the admin's
    # alone; other tests' anonymous refusals on department routes may be the ARS's to see.
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    assert (await client.get("/v1/audit", params={"limit": 7})).status_code == 401
    await until_audited(client, subject="anonymous", status=401, action="GET /v1/audit", since=since)
    seen_by_ars = await audit_entries(client, ars, subject="anonymous", status=401, since=since)
    assert all(e["department"] is not None for e in seen_by_ars), seen_by_ars
    _, ars_elsewhere = person("ars", region=ILE_DE_FRANCE)
    assert await audit_entries(client, ars_elsewhere, subject=desk) == []
    outside = await client.get("/v1/audit", params={"department": "34"}, headers=ars_elsewhere)
    assert outside.status_code == 403 and outside.json()["code"] == "OUT_OF_SCOPE"

    # Desks and HADs may not read the trail at all; a page is at most 200 entries.
    assert (await client.get("/v1/audit", headers=desk_headers)).status_code == 403
    assert (await client.get("/v1/audit", headers=token("had", finess=unique_finess()))).status_code == 403
    too_big = await client.get("/v1/audit", params={"limit": 201}, headers=token("admin"))
    assert too_big.status_code == 422 and too_big.json()["errors"][0]["field"] == "query.limit"
