"""The live admission metrics follow the indicators' rules: an urgent admission feeds the request →
admission histogram (the within-24 h SLA), a planned one counts on time or late against the end of
its planned day on the department's clock, never in the histogram."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from prometheus_client import REGISTRY
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import ts
from reflexe_indicators.service_layer.facts import _observe_admission


class FactsRow:
    """The one referral_facts row _observe_admission reads (what the fold just wrote)."""

    def __init__(self, **row) -> None:
        self.row = row

    async def fetchrow(self, sql: str, referral_id: str):
        assert "referral_facts" in sql and referral_id
        return self.row


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def admitted(department: str, at: datetime) -> pb.PatientAdmitted:
    header = pb.ReferralEventHeader(referral_id=str(uuid.uuid4()), department=department, occurred_at=ts(at))
    return pb.PatientAdmitted(header=header, had_finess="974990004")


async def test_planned_admissions_count_on_time_or_late_on_the_departments_clock() -> None:
    # Réunion is UTC+4: its 14 March ends at 20:00 UTC.
    planned = {"requested_at": datetime(2025, 3, 10, tzinfo=UTC), "urgency": "PLANNED", "planned_date": date(2025, 3, 14)}
    before = {t: sample("reflexe_planned_admissions_total", department="974", timing=t) for t in ("on_time", "late")}
    histogram = sample("reflexe_request_to_admission_seconds_count", department="974")
    await _observe_admission(FactsRow(**planned), "s", admitted("974", datetime(2025, 3, 14, 19, 59, tzinfo=UTC)))
    await _observe_admission(FactsRow(**planned), "s", admitted("974", datetime(2025, 3, 14, 20, 0, tzinfo=UTC)))
    assert sample("reflexe_planned_admissions_total", department="974", timing="on_time") == before["on_time"] + 1
    assert sample("reflexe_planned_admissions_total", department="974", timing="late") == before["late"] + 1
    assert sample("reflexe_request_to_admission_seconds_count", department="974") == histogram


async def test_urgent_admissions_and_undated_planned_ones_feed_the_24_hour_histogram() -> None:
    requested = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
    count = sample("reflexe_request_to_admission_seconds_count", department="973")
    within = sample("reflexe_request_to_admission_seconds_bucket", department="973", le="86400.0")
    await _observe_admission(FactsRow(requested_at=requested, urgency="WITHIN_24H", planned_date=None), "s",
                             admitted("973", datetime(2025, 3, 10, 20, 0, tzinfo=UTC)))
    await _observe_admission(FactsRow(requested_at=requested, urgency="PLANNED", planned_date=None), "s",
                             admitted("973", datetime(2025, 3, 12, 8, 0, tzinfo=UTC)))
    assert sample("reflexe_request_to_admission_seconds_count", department="973") == count + 2
    assert sample("reflexe_request_to_admission_seconds_bucket", department="973", le="86400.0") == within + 1
