"""The referral service on the real broker and database: limits at the door (413, 501, 429,
pagination), no direct identifier in, and the fixed defects (identical retry without
requested_at, unknown departments)."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest

from reflexe_referral.entrypoints.app import build_app
from reflexe_referral.settings import ReferralSettings
from tests.support.data import pseudonym, referral_body, unique_finess
from tests.support.platform import in_process_env
from tests.support.services import serve_in_process, token
from tests.support.territory import own_commune, own_department

pytestmark = pytest.mark.integration
# A department nobody else posts into: its list of open referrals is this module's alone.
DEPARTMENT = own_department()
COMMUNE = own_commune(DEPARTMENT)


def _settings(topics) -> ReferralSettings:
    return ReferralSettings(**in_process_env(topics))


@pytest.fixture(scope="module")
async def client(topics):
    async with serve_in_process(build_app(_settings(topics))) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def _post(client: httpx.AsyncClient, body: dict) -> httpx.Response:
    return await client.post("/v1/referrals", json=body, headers=token("hospital", finess=body["source"]["finess"]))


def _fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json()["errors"]]


async def test_an_identical_retry_without_requested_at_answers_200_with_the_same_referral(client):
    body = referral_body(unique_finess())
    assert "requested_at" not in body
    first = await _post(client, body)
    assert first.status_code == 201, first.text
    again = await _post(client, body)
    assert again.status_code == 200, again.text
    assert again.json()["referral_id"] == first.json()["referral_id"]
    assert again.json()["requested_at"] == first.json()["requested_at"]  # the first stamp stands
    changed = {**body, "clinical": {**body["clinical"], "karnofsky": 30}}
    conflict = await _post(client, changed)
    assert conflict.status_code == 409 and conflict.json()["code"] == "DUPLICATE_REFERRAL_ID"
    # A client that stamps its own requested_at keeps the same guarantee.
    stamped = referral_body(unique_finess(), requested_at="2026-01-05T09:30:00+01:00")
    assert (await _post(client, stamped)).status_code == 201
    assert (await _post(client, stamped)).status_code == 200
    moved = {**stamped, "requested_at": "2026-01-05T09:31:00+01:00"}
    assert (await _post(client, moved)).status_code == 409


@pytest.mark.parametrize("value", [
    "DUPONT Jeanne née le 12/03/1944",
    "1440334172005",
    "144033417200542",
    uuid.uuid4().hex,  # 32 hex: the old test format, not a SHA-256
    hashlib.sha256(b"x").hexdigest().upper(),
])
async def test_a_pseudonym_not_in_the_one_format_is_refused(client, value):
    body = referral_body(unique_finess())
    body["patient"]["pseudonym"] = value
    response = await _post(client, body)
    assert response.status_code == 422
    assert _fields(response) == ["body.patient.pseudonym"]


@pytest.mark.parametrize("where, field", [
    ({"avis": {"eligible": False, "reason": "PATIENT_REFUSED", "text": "née le 12/03/1944"}}, "body.avis.text"),
    ({"avis": {"eligible": True, "text": "NIR 2 44 03 34 172 005 42"}}, "body.avis.text"),
    ({"source": {"unit": "SAU - M. DUPONT 12 mars 1944"}}, "body.source.unit"),
])
async def test_free_text_in_a_referral_refuses_a_nir_or_a_birth_date(client, where, field):
    response = await _post(client, referral_body(unique_finess(), **where))
    assert response.status_code == 422, response.text
    assert _fields(response) == [field]


async def test_decline_and_cancel_texts_refuse_a_nir_or_a_birth_date(client):
    hospital = unique_finess()
    body = referral_body(hospital)
    assert (await _post(client, body)).status_code == 201
    referral_id = body["referral_id"]
    cancel = await client.post(f"/v1/referrals/{referral_id}/cancel", json={"reason": "PATIENT_REFUSED", "text": "né le 1944-03-12"},
                               headers=token("hospital", finess=hospital))
    assert cancel.status_code == 422 and _fields(cancel) == ["body.text"]
    decline = await client.post(f"/v1/referrals/{referral_id}/offers/any/decline",
                                json={"reason": "NO_CAPACITY", "text": "patient 1440334172005"}, headers=token("had", finess=unique_finess()))
    assert decline.status_code == 422 and _fields(decline) == ["body.text"]
    close = await client.post(f"/v1/referrals/{referral_id}/desk/close", json={"reason": "PATIENT_REFUSED", "text": "ddn 12/03/44"},
                              headers=token("desk", department="34"))
    assert close.status_code == 422 and _fields(close) == ["body.text"]
    # Ordinary text passes, and the referral was never touched by the refused calls.
    ok = await client.post(f"/v1/referrals/{referral_id}/cancel", json={"reason": "PATIENT_REFUSED", "text": "refus, revoir dans 48 h"},
                           headers=token("hospital", finess=hospital))
    assert ok.status_code == 200 and ok.json()["status"] == "CANCELLED"


async def test_unknown_departments_are_404_on_paths_and_422_in_a_widen(client):
    for department in ("99", "975", "977", "988", "20"):
        response = await client.get(f"/v1/departments/{department}/referrals", headers=token("admin"))
        assert response.status_code == 404, department
        assert response.json()["code"] == "UNKNOWN_DEPARTMENT"
    assert (await client.get("/v1/departments/976/referrals", headers=token("admin"))).status_code == 200
    widen = await client.post(f"/v1/referrals/{uuid.uuid4()}/desk/widen", json={"departments": ["30", "975", "986"]},
                              headers=token("desk", department="34"))
    assert widen.status_code == 422 and widen.json()["code"] == "UNKNOWN_DEPARTMENT"
    assert _fields(widen) == ["body.departments[1]", "body.departments[2]"]


async def test_open_referrals_come_in_bounded_pages(client):
    ids = []
    for _ in range(3):
        body = referral_body(unique_finess(DEPARTMENT), COMMUNE)
        assert (await _post(client, body)).status_code == 201
        ids.append(body["referral_id"])
    desk = token("desk", department=DEPARTMENT)
    seen, offset, pages = [], 0, 0
    while offset is not None:
        page = (await client.get(f"/v1/departments/{DEPARTMENT}/referrals", params={"limit": 2, "offset": offset},
                                 headers=desk)).json()
        assert len(page["referrals"]) <= 2 and (page["next_offset"] is None or page["next_offset"] == offset + 2)
        seen += [r["referral_id"] for r in page["referrals"]]
        offset, pages = page["next_offset"], pages + 1
    assert sorted(seen) == sorted(ids) and pages == 2
    for limit in ("-1", "0", "201", "many"):
        response = await client.get(f"/v1/departments/{DEPARTMENT}/referrals", params={"limit": limit}, headers=desk)
        assert response.status_code == 422, limit
        assert _fields(response) == ["query.limit"]
    response = await client.get(f"/v1/departments/{DEPARTMENT}/referrals", params={"offset": "-3"}, headers=desk)
    assert response.status_code == 422 and _fields(response) == ["query.offset"]
    # A referral's timeline is paged the same way.
    whole = (await client.get(f"/v1/referrals/{ids[0]}/timeline", headers=desk)).json()
    assert whole["events"] and whole["next_offset"] is None
    one = (await client.get(f"/v1/referrals/{ids[0]}/timeline", params={"limit": 1}, headers=desk)).json()
    assert one["events"] == whole["events"][:1]
    assert one["next_offset"] == (1 if len(whole["events"]) > 1 else None)
    response = await client.get(f"/v1/referrals/{ids[0]}/timeline", params={"limit": 0}, headers=desk)
    assert response.status_code == 422 and _fields(response) == ["query.limit"]


async def test_a_body_above_the_limit_is_413_before_parsing(client):
    hospital = unique_finess()
    huge = referral_body(hospital, avis={"eligible": True, "text": "x" * (300 * 1024)})
    response = await _post(client, huge)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "REQUEST_TOO_LARGE"

    async def chunks():  # no Content-Length: counted as it arrives
        for _ in range(300):
            yield b" " * 1024

    streamed = await client.post("/v1/referrals", content=chunks(), headers={**token("hospital", finess=hospital),
                                                                            "content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["code"] == "REQUEST_TOO_LARGE"


async def test_unknown_methods_are_refused_and_never_labelled(client):
    response = await client.request("PROPFIND", "/v1/referrals", headers=token("admin"))
    assert response.status_code == 501 and response.json()["code"] == "METHOD_NOT_IMPLEMENTED"
    metrics = (await client.get("/metrics")).text
    assert 'method="PROPFIND"' not in metrics
    assert 'reflexe_http_request_duration_seconds_count{method="GET"' in metrics or 'method="GET"' in metrics


async def test_readiness_reports_without_exception_text(client):
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["checks"].values()) == {"ok"}


@pytest.fixture
async def throttled(topics):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RATE_LIMIT_BURST", "3")
        env.setenv("RATE_LIMIT_PER_SECOND", "0.05")
        app = build_app(_settings(topics))
    async with serve_in_process(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def test_a_caller_above_its_rate_gets_429_with_retry_after(throttled):
    desk = token("desk", department="34")
    for _ in range(3):
        assert (await throttled.get("/v1/departments/34/referrals", headers=desk)).status_code == 200
    refused = await throttled.get("/v1/departments/34/referrals", headers=desk)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "TOO_MANY_REQUESTS"
    # One token takes 20 s at 0.05/s; the bucket refilled a little while the first three were served.
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    # Another caller is not affected; probes never are.
    assert (await throttled.get("/v1/departments/31/referrals", headers=token("desk", department="31"))).status_code == 200
    for _ in range(5):
        assert (await throttled.get("/readyz")).status_code == 200
        assert (await throttled.get("/metrics")).status_code == 200
