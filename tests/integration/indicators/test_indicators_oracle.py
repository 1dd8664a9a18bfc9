"""The indicator set on the real broker and database, checked against an independent oracle:
a simulated month of events is published (late and out of order), the service folds it, and
every indicator at every level and period equals the oracle's plain-Python figures — before
and after a replay from the beginning of the log, which switches over while the API answers."""

from __future__ import annotations

import collections
import csv
import io
from datetime import UTC, date, datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from openpyxl import load_workbook

from reflexe_indicators.entrypoints.app import build_app
from reflexe_indicators.settings import IndicatorsSettings
from tests.integration.indicators import simulation
from tests.integration.indicators.simulation import DEPARTMENTS, PARIS, differences, encode, generate, oracle
from tests.support.services import eventually, serve_in_process, token
from tests.support.issuer import suite_issuer

pytestmark = pytest.mark.integration
FIRST, LAST = date(2025, 2, 1), date(2025, 4, 30)
LEVELS = ("department", "region", "source", "had")
ADMIN = token("admin")


@pytest.fixture(scope="module")
async def service(topics):
    settings = IndicatorsSettings(KAFKA_BOOTSTRAP=topics.kafka_bootstrap, DATABASE_URL=topics.database_url,
                                  OIDC_ISSUER=suite_issuer().url, LOG_LEVEL="WARNING", INDICATORS_REPLAY_BATCH=5000)
    async with serve_in_process(build_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            yield client


@pytest.fixture(scope="module")
async def simulated(service, topics):
    events = generate()
    producer = AIOKafkaProducer(**topics.kafka_options(), acks="all", linger_ms=5)
    await producer.start()
    try:
        for ev in events:
            topic, value, headers = encode(ev)
            await producer.send(topic, value, key=ev.department.encode(), headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    return events


async def _rows(client: httpx.AsyncClient, level: str, period: str, headers=ADMIN, **params) -> list[dict]:
    response = await client.get("/v1/indicators", headers=headers, params={
        "level": level, "period": period, "from": FIRST.isoformat(), "to": LAST.isoformat(), **params})
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def _expected(events) -> dict[tuple[str, str], dict]:
    """The oracle's figures for every level and period (the simulated months are long past, so
    they do not change while the service catches up: computed once)."""
    now = datetime.now(UTC)
    return {(level, period): oracle(events, level, period, FIRST, LAST, now)
            for level in LEVELS for period in ("day", "month")}


async def _all_agree(client, events, expected: dict | None = None) -> list[str]:
    expected = expected or _expected(events)
    problems = []
    for level in LEVELS:
        for period in ("day", "month"):
            problems += differences(await _rows(client, level, period), expected[level, period], level)
    return problems


async def _wait_agreement(client, events, what: str) -> None:
    last: list[str] = []
    expected = _expected(events)

    async def agree():
        nonlocal last
        last = await _all_agree(client, events, expected)
        return not last

    try:
        await eventually(agree, timeout=120, interval=1, what=what)
    except AssertionError:
        columns = collections.Counter(p.split(" ")[3].rstrip(":") if p.count(" ") > 3 else p for p in last)
        raise AssertionError(f"{what}: {len(last)} differences, by column {dict(columns)}, first ones:\n"
                             + "\n".join(last[:40])) from None


async def test_every_indicator_matches_the_oracle_then_again_after_a_replay(service, simulated):
    await _wait_agreement(service, simulated, "the live figures equal the oracle's")
    # Sanity: the simulation exercises what it claims to.
    month = {r["key"]: r for r in await _rows(service, "department", "month") if r["period"] == "2025-03"}
    m972 = month["972"]
    assert m972["offers_declined"] > 0 and m972["offers_expired"] > 0 and m972["escalations"] > 0
    assert m972["cancellations"] > 0 and m972["ineligible"] > 0 and m972["admissions_in_ehpad"] > 0
    assert 0 < m972["stale_share"] < 1 and m972["days_below_viability"] > 0
    assert m972["ed_exits"] > 0 and 0 < m972["ed_stay_median_min"] <= m972["ed_stay_p90_min"]
    had_days = [r for r in await _rows(service, "had", "day") if r["key"] == simulation.hads("972")[0]]
    assert any(r["had_days"] and not r["days_below_viability"] for r in had_days), "the big HAD is above 50 patients some days"
    # The HAD declaring its census: its days count on it (above and below 50), its earlier ones on the platform's patients.
    census_days = [r for r in await _rows(service, "had", "day") if r["key"] == simulation.hads("973")[1]]
    assert any(r["census_days"] and not r["days_below_viability"] for r in census_days), "a census above 50"
    assert any(r["census_days"] and r["days_below_viability"] for r in census_days), "a census below 50"
    assert any(r["had_days"] and not r["census_days"] for r in census_days), "days before its first census"
    # Urgent and planned, their shares, the avis and their outcomes, the rates per inhabitant.
    for department in DEPARTMENTS:
        m = month[department]
        assert m["received_urgent"] > 0 and m["received_planned"] > 0, department
        assert m["received_urgent"] + m["received_planned"] == m["referrals_received"], department
        assert m["admissions_urgent"] + m["admissions_planned"] == m["admissions"], department
        assert 0 < m["admitted_within_24h_share"] < 1 and 0 < m["admitted_on_time_share"] < 1, department
        assert m["avis_favourable"] > 0 and m["avis_unfavourable"] > 0 and m["avis_admitted"] > 0, department
        assert m["avis_given"] == m["avis_favourable"] + m["avis_unfavourable"], department
        assert m["referrals_received_per_100k"] > 0 and m["patient_days_per_100k"] > 0, department
    assert sum(month[d]["avis_cancelled"] for d in DEPARTMENTS) > 0
    # The evaluation before admission: pending acceptances confirmed or withdrawn, their delay, the avis after posting.
    for department in DEPARTMENTS:
        m = month[department]
        assert m["acceptances_pending_evaluation"] > 0 and m["evaluations_confirmed"] > 0, department
        assert m["evaluations_withdrawn"] > 0, department
        assert 0 < m["evaluation_median_min"] <= m["evaluation_p90_min"], department
        assert m["avis_after_posting_favourable"] > 0 and m["avis_after_posting_unfavourable"] > 0, department
        assert m["avis_after_posting"] == m["avis_after_posting_favourable"] + m["avis_after_posting_unfavourable"]
    had_month = [r for r in await _rows(service, "had", "month") if r["period"] == "2025-03"]
    # At HAD level, each avis is its liaison nurse's HAD's: the department's HADs share them all.
    assert sum(r["avis_after_posting"] for r in had_month
               if r["key"] in simulation.hads("972")) == m972["avis_after_posting"]
    # A withdrawn acceptance is not the referral's: taking it for one (the next HAD's acceptance
    # ignored) gives other times to acceptance and other accepting HADs than the service's.
    for level in ("department", "had"):
        old_rule = oracle(simulated, level, "day", FIRST, LAST, datetime.now(UTC), pending_is_acceptance=True)
        wrong = differences(await _rows(service, level, "day"), old_rule, level)
        assert any(" acceptance_median_min:" in line for line in wrong), level
    by_referral = collections.defaultdict(list)
    for ev in sorted(simulated, key=lambda ev: ev.at):
        by_referral[ev.referral_id].append(ev)
    def scripted_request(ev) -> bool:  # requested at 10:00 local time on the 6th or the 20th
        local = ev.at.astimezone(simulation.ZONES[ev.department])
        return ev.kind == "ReferralRequested" and (local.day, local.hour, local.minute) in ((6, 10, 0), (20, 10, 0))

    scripted = [evs for evs in by_referral.values() if scripted_request(evs[0])]
    assert len(scripted) == 2 * len(DEPARTMENTS)
    for evs in scripted:  # the first HAD withdraws its pending acceptance, then the second accepts plainly
        answers = [(ev.kind, ev.fields.get("had"), ev.fields.get("pending_evaluation", False)) for ev in evs
                   if ev.kind in ("OfferAccepted", "AcceptanceWithdrawn", "EvaluationConfirmed")]
        assert [a[0] for a in answers] == ["OfferAccepted", "AcceptanceWithdrawn", "OfferAccepted"], answers
        assert answers[0][2] and not answers[2][2] and answers[0][1] != answers[2][1]
    region = {r["key"]: r for r in await _rows(service, "region", "month") if r["period"] == "2025-03"}
    assert region["02"]["admissions_per_100k"] == m972["admissions_per_100k"], "Martinique is a region of one department"
    # The departments' clocks matter: on Paris time, the overseas days would count other referrals.
    local = oracle(simulated, "department", "day", FIRST, LAST, datetime.now(UTC))
    on_paris_time = oracle(simulated, "department", "day", FIRST, LAST, datetime.now(UTC),
                           zones={d: PARIS for d in DEPARTMENTS})
    for department in ("972", "973", "974"):
        days = {k for k in set(local) | set(on_paris_time) if k[1] == department}
        assert any(local.get(k, {}).get("referrals_received") != on_paris_time.get(k, {}).get("referrals_received")
                   for k in days), department

    before = (await service.get("/v1/indicators/replay", headers=ADMIN)).json()["current_generation"]
    started = await service.post("/v1/indicators/replay", headers=ADMIN)
    assert started.status_code == 202, started.text
    assert (await service.post("/v1/indicators/replay", headers=ADMIN)).status_code in (202, 409)
    answered = 0

    async def switched():
        nonlocal answered
        answered += (await service.get("/v1/indicators", headers=ADMIN, params={
            "level": "department", "period": "month", "from": "2025-03-01", "to": "2025-03-31"})).status_code == 200
        status = (await service.get("/v1/indicators/replay", headers=ADMIN)).json()
        assert status["replay"]["state"] != "failed", status
        return status if status["current_generation"] == started.json()["generation"] else None

    status = await eventually(switched, timeout=120, interval=0.2, what="the replay switching over")
    assert status["current_generation"] > before and status["replay"]["events"] >= len(simulated)
    assert answered >= 1, "the API answered during the replay"
    assert not await _all_agree(service, simulated), "the rebuilt generation equals the oracle"


async def test_a_window_inside_the_log_matches_the_oracle(service, simulated):
    """Periods in the middle of the log: the stays admitted before them, the declarations and
    censuses before and after them count as they do when the whole log is asked (the service
    reads only what overlaps the window)."""
    await _wait_agreement(service, simulated, "the live figures equal the oracle's")
    now = datetime.now(UTC)
    problems = []
    for period, first, last in (("month", date(2025, 3, 1), date(2025, 3, 31)), ("day", date(2025, 3, 10), date(2025, 3, 20))):
        for level in LEVELS:
            rows = await _rows(service, level, period, **{"from": first.isoformat(), "to": last.isoformat()})
            assert rows, (level, period)
            problems += differences(rows, oracle(simulated, level, period, first, last, now), level)
    assert not problems, "\n".join(problems[:40])


async def test_the_exports_hold_the_same_numbers_as_the_api(service, simulated):
    await _wait_agreement(service, simulated, "the live figures equal the oracle's")
    headers = token("ars", region="02")
    response = await service.get("/v1/indicators/export.xlsx", headers=headers,
                                 params={"from_month": "2025-02", "to_month": "2025-04"})
    assert response.status_code == 200, response.text
    book = load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["department", "source", "had"]
    for level in ("department", "source", "had"):
        api = await _rows(service, level, "month", headers=headers)
        sheet = list(book[level].iter_rows(values_only=True))
        header, body = list(sheet[0]), sheet[1:]
        exported = [dict(zip(header, r)) for r in body]
        assert len(exported) == len(api) > 0, level
        for got, want in zip(exported, api):
            assert {k: v for k, v in got.items() if v != want[k]} == {}, (level, got["period"], got["key"])
    csv_response = await service.get("/v1/indicators/export.csv", headers=headers,
                                     params={"level": "source", "from_month": "2025-02", "to_month": "2025-04"})
    assert csv_response.status_code == 200
    parsed = list(csv.DictReader(io.StringIO(csv_response.text)))
    api = await _rows(service, "source", "month", headers=headers)
    assert len(parsed) == len(api) > 0
    for got, want in zip(parsed, api):
        for column, value in want.items():
            assert got[column] == ("" if value is None else str(value) if not isinstance(value, float) else repr(value))


async def test_scopes_and_authentication(service, simulated):
    await _wait_agreement(service, simulated, "the live figures equal the oracle's")  # the rows to scope are there
    params = {"level": "department", "period": "month", "from": "2025-03-01", "to": "2025-03-31"}
    assert (await service.get("/v1/indicators", params=params)).status_code == 401
    assert (await service.get("/v1/indicators", params=params, headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await service.get("/v1/indicators/export.xlsx", params={"month": "2025-03"})).status_code == 401
    assert (await service.get("/v1/indicators", params=params, headers=token("hospital", finess=simulation.sources("972")[0][0]))).status_code == 403
    desk = token("desk", department="972")
    assert (await service.get("/v1/indicators", params={**params, "department": "973"}, headers=desk)).status_code == 403
    assert {r["key"] for r in (await service.get("/v1/indicators", params=params, headers=desk)).json()["rows"]} == {"972"}
    ars = token("ars", region="02")
    assert (await service.get("/v1/indicators", params={**params, "department": "973"}, headers=ars)).status_code == 403
    assert {r["key"] for r in (await service.get("/v1/indicators", params=params, headers=ars)).json()["rows"]} == {"972"}
    region = (await service.get("/v1/indicators", params={**params, "level": "region"}, headers=ars)).json()["rows"]
    assert {r["key"] for r in region} == {"02"}
    had = token("had", finess=simulation.hads("972")[1])
    assert (await service.get("/v1/indicators", params=params, headers=had)).status_code == 403
    own = (await service.get("/v1/indicators", params={**params, "level": "had"}, headers=had)).json()["rows"]
    assert own and {r["key"] for r in own} == {simulation.hads("972")[1]}
    for who in (desk, ars, had):
        assert (await service.post("/v1/indicators/replay", headers=who)).status_code == 403
        assert (await service.get("/v1/indicators/replay", headers=who)).status_code == 403
    bad = await service.get("/v1/indicators", params={**params, "to": "2025-02-01"}, headers=ADMIN)
    assert bad.status_code == 422
