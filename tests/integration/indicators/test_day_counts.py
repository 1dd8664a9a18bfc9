"""The day counts stay exact under the live path: events upserted one by one, in a shuffled
order, redelivered, an offer and an avis counted before their referral's request names its
sending establishment, equal the counts rebuilt from the facts afterwards, on the departments'
own clocks (real PostgreSQL)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import ts
from reflexe_indicators.adapters import day_counts, store
from reflexe_indicators.domain.facts import fold
from reflexe_indicators.service_layer.indicators import Query, compute
from tests.support.territory import own_department

pytestmark = pytest.mark.integration
MIGRATIONS = Path(store.__file__).parent.parent / "migrations"
# 23:30 in Paris (UTC+1 in February) is another local day than in Martinique (UTC-4): 18:30 the same day.
LATE_EVENING = datetime(2025, 2, 14, 22, 30, tzinfo=UTC)


def referral_events(department: str, source: str, hads: list[str], at: datetime) -> list:
    rid = str(uuid.uuid4())

    def h(minutes: int, actor: str = "system") -> pb.ReferralEventHeader:
        return pb.ReferralEventHeader(referral_id=rid, department=department, actor=actor,
                                      occurred_at=ts(at + timedelta(minutes=minutes)))

    return [
        pb.ReferralRequested(header=h(0), request=pb.ReferralRequest(
            referral_id=rid, department=department, source=pb.Source(kind="ED", finess=source),
            clinical=pb.Clinical(urgency="PLANNED", planned_date="2025-02-16"), requested_at=ts(at))),
        pb.OfferMade(header=h(40), offer_id=f"{rid}:1", had_finess=hads[0]),
        pb.OfferDeclined(header=h(50), offer_id=f"{rid}:1", had_finess=hads[0], reason="NO_CAPACITY"),
        pb.AvisGiven(header=h(55, f"liaison:{hads[1]}"), eligible=False, reason="OTHER"),
        pb.OfferMade(header=h(60), offer_id=f"{rid}:2", had_finess=hads[1]),
        pb.OfferAccepted(header=h(70), offer_id=f"{rid}:2", had_finess=hads[1], pending_evaluation=True),
        pb.ReferralEscalated(header=h(100)),
        pb.ReferralCancelled(header=h(24 * 60), reason="PATIENT_REFUSED"),
    ]


async def day_rows(conn: asyncpg.Connection, schema: str) -> dict[tuple, dict]:
    """Every day count that is not zero, by family and key."""
    rows = {}
    for f in day_counts.FAMILIES:
        for r in await conn.fetch(f'SELECT * FROM "{schema}".{f.table}'):
            counts = {c: r[c] for c in f.columns}
            if any(counts.values()):
                rows[(f.name, r["day"], r["department"], r["source_finess"], r["had"])] = counts
    return rows


async def test_live_upserts_in_any_order_keep_the_day_counts_equal_to_the_facts(infra):
    base = f"day_counts_{uuid.uuid4().hex[:8]}"
    schema = store.generation_schema(base, 1)
    departments = ["972", own_department()]
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{base}"; SET search_path = "{base}"')
        for migration in sorted(MIGRATIONS.glob("*.sql")):
            await conn.execute(migration.read_text())
        await conn.execute(store._ddl(schema))
        await store._load_regions(conn)
        await day_counts.build(conn, schema)

        rng = random.Random(11)
        events = []
        for n, department in enumerate(departments):
            hads = [f"{department}{n}0000{k}" for k in range(2)]
            for k in range(3):
                events += referral_events(department, f"{department}{n}9999{k}", hads, LATE_EVENING + timedelta(hours=k))
        rng.shuffle(events)
        # The offers, the avis and the escalation of one referral before its request (its establishment unknown).
        late_request = next(e for e in events if isinstance(e, pb.ReferralRequested))
        events.remove(late_request)
        redelivered = rng.sample(events, 8)
        for message in [*events, *redelivered, late_request]:
            async with conn.transaction():
                await store.apply(conn, schema, fold(message))

        kept = await day_rows(conn, schema)
        for department in departments:
            days = {key[1] for key in kept if key[0] == "requested" and key[2] == department}
            expected = {date(2025, 2, 14)} if department == "972" else {date(2025, 2, 14), date(2025, 2, 15)}
            assert days == expected, (department, days)  # on the department's own clock
        by_source = {r["key"]: r for r in await compute(
            conn, schema, Query("source", "month", date(2025, 2, 1), date(2025, 2, 28)), stale_after=timedelta(hours=12))}
        source = late_request.request.source.finess
        assert by_source[source]["offers_made"] == 2 and by_source[source]["offers_declined"] == 1
        assert by_source[source]["avis_after_posting_unfavourable"] == 1 and by_source[source]["referrals_received"] == 1

        for table in ("referral_facts", "offer_facts", "avis_facts"):  # recounted from the facts alone
            await conn.execute(f'DROP TRIGGER {table}_days_insert ON "{schema}".{table}')
        await day_counts.build(conn, schema)
        assert await day_rows(conn, schema) == kept
        assert len(kept) > 20
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; DROP SCHEMA IF EXISTS "{base}" CASCADE')
        await conn.close()
