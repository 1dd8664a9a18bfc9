"""The indicator set of the ARS follow-up (docs/domain.md, "Indicators"), computed in SQL over the
facts of the current generation. The API, the exports and the Prometheus gauges all call
`compute`, so they cannot disagree. The counting families (received, ineligible, escalated,
cancelled, offers made and answered, avis after posting) are summed from their day counts
(adapters.day_counts, kept from the facts with the same conditions); durations, stays and
HAD-days read the facts of the window.

Definitions where the ARS follow-up set is silent (also in the README of the service):

* Periods are **local days and months of the department** (``time_zone_of``: Europe/Paris for
  metropolitan France and Corsica, America/Martinique, Indian/Reunion... overseas); an event
  belongs to the period of its event time (the time it carries), never of its arrival, read on the
  clock of its referral's department (offers: the offer's department; HAD-days: the department of
  the HAD's latest declaration). "Today" is the department's today.
* Levels: ``department`` (the referral's department), ``region`` (its region), ``source`` (the
  sending establishment's FINESS), ``had`` (the HAD concerned by the event: offers by the HAD
  offered to, acceptance by the accepting HAD, admissions and stays by the admitting HAD, first
  offer by the HAD of the first offer; an evaluation by the HAD that accepted pending it; an avis
  after posting by the liaison nurse's HAD). Referral counts that concern no single HAD (received,
  ineligible, escalations, cancellations, conversion) are null at HAD level; HAD-day indicators
  (occupancy, viability, freshness) are null at source level and, at department/region level,
  aggregate the HADs whose latest declaration names that department.
* Counts are attributed to the period of their event: received → request time, ineligible,
  escalation (first one), cancellation, admission → their event time; offers made → offer
  time; accepted/declined/expired → outcome time.
* Conversion rate: same cohort — referrals requested in the period that were admitted (at any
  time up to now) ÷ referrals requested in the period.
* Durations (minutes) are attributed to the period of their end event (first offer, acceptance,
  admission) and measured from the request time. Median and 90th percentile use
  **percentile_cont** (linear interpolation between the two nearest ranks: the textbook median
  of an even count, numpy's default percentile), exact over the facts of the period.
* Urgent and planned: a referral is **planned** when its urgency is PLANNED and it has a planned
  date (the API refuses PLANNED without one; an older event without it is measured as urgent, as
  the referral service's clock does); every other referral is **urgent**. ``received_urgent`` /
  ``received_planned`` by request period, ``admissions_urgent`` / ``admissions_planned`` by
  admission period.
* Admitted within 24 h share: **urgent** admissions of the period whose request → admission
  ≤ 24 h ÷ urgent admissions of the period with a known request time. The admission delay
  (``admission_median_min``, ``admission_p90_min``) is over urgent admissions too: a planned
  admission's delay from its request is the date chosen, not a performance.
* On-time share of planned admissions: planned admissions of the period admitted before the end
  of their planned day (midnight ending it, on the department's clock; an admission before the
  planned day is on time) ÷ planned admissions of the period.
* Avis HAD (the eligibility opinion the request carried): ``avis_given``, ``avis_favourable``,
  ``avis_unfavourable`` by request period; what became of the referrals with an avis, same cohort
  as the conversion rate (requested in the period, outcome up to now): ``avis_admitted``,
  ``avis_cancelled``, ``avis_ineligible`` (the rest are still open). Null at HAD level.
* Evaluation before admission. An acceptance pending evaluation is the HAD's **answer** to its
  offer: it counts in ``offers_accepted`` by its answer time (accepted, declined and expired stay
  the offers' answers) and in ``acceptances_pending_evaluation``. The **referral is accepted**
  only at a plain acceptance or at the confirmation of one pending evaluation: the time to
  acceptance (``acceptance_median_min``, ``acceptance_p90_min``) runs from the request to that
  time, in its period and, at HAD level, for the HAD whose acceptance stands. A withdrawn
  acceptance is never the referral's (the referral went back to the search and the next HAD's
  acceptance is); it stays in ``offers_accepted`` of its answer period and counts in
  ``evaluations_withdrawn`` of its own, so over a span ``offers_accepted - evaluations_withdrawn``
  is the acceptances that stood. ``evaluations_confirmed``, ``evaluations_withdrawn``: by the
  period of the confirmation or withdrawal; ``evaluation_median_min``, ``evaluation_p90_min``: the
  pending acceptance → its confirmation or withdrawal, by the period of the end, over the
  evaluations whose pending acceptance is in the facts.
* Avis after posting: ``avis_after_posting`` (``_favourable``, ``_unfavourable``) counts each avis
  HAD a liaison nurse gave after the referral was posted (an update is another avis), by the
  period of the avis; at HAD level, her HAD's. The avis the request carried stay in
  ``avis_given``: a referral posted with an avis and updated after counts in both.
* Rates per 100,000 inhabitants (department and region levels only): referrals received,
  admissions and patient-days of the period ÷ the population × 100,000, not annualised. The
  population is the sum of the communes' populations of the COG data the platform carries
  (``reflexe_common.geography``, ``Department.population``; a region: its departments').
* ED stay of referred patients (``ed_exits``, ``ed_stay_median_min``, ``ed_stay_p90_min``): from
  the request's ED arrival time to the ED exit the referring hospital reported (EdExitRecorded,
  an HL7 A03 through the gateway; its exit time, not when it was recorded), attributed to the
  period of the exit. ``ed_exits`` counts the exits recorded in the period; the median and 90th
  percentile are over those whose referral has an ED arrival time. Null at HAD level (the stay
  is the referring hospital's).
* Reasons outside the national code list count as OTHER.
* Active patients: a patient is active on local day D if admitted on or before D and not
  discharged on or before D (the admission day counts, the discharge day does not; an
  admission and discharge on the same day counts no day). Day row: active that day; month
  row: distinct patients active on at least one day of the month (file active). Patient-days:
  sum of active patients over the days. Days after today are never counted.
* HAD-days: the days from the HAD's first capacity declaration to today. On each HAD-day the
  capacity is the **authorised places** of the latest declaration made before the end of the
  day (declared "places available" is free places, not capacity), and the patients are the
  HAD's **census**: the active patients (all of them, not only the platform's) of its latest
  declaration carrying one made before the end of the day; until its first census, the
  platform's own active patients of that day (which undercounts an HAD that takes patients from
  elsewhere). ``census_days``: the HAD-days counted on a census. Occupancy = patients summed
  over the HAD-days ÷ capacity-days. Viability: HAD-days with < 50 patients. Declaration
  freshness: stale seconds ÷ observed seconds over the HAD-days, a declaration being stale
  from ``declared_at + stale_after`` until the next declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from reflexe_common.geography import Geography
from reflexe_indicators.adapters.day_counts import FAMILIES, KINDS, PLANNED, REASONS, URGENT, DayFamily
from reflexe_indicators.adapters.day_counts import reason_is as _reason
from reflexe_indicators.adapters.store import stay_range

PARIS = ZoneInfo("Europe/Paris")
# The clock of the department of the row being read (department_regions g joined on it).
ZONE = "COALESCE(g.time_zone, 'Europe/Paris')"
# Midnight ending the planned day, on the department's clock: a planned admission is on time before it.
END_OF_PLANNED_DAY = f"((r.planned_date + 1)::timestamp AT TIME ZONE {ZONE})"
# Every local day is within a day of Paris's: the time filter is widened by as much, then exact on local dates.
ZONE_MARGIN = timedelta(days=1)
LEVELS = ("department", "region", "source", "had")
PERIODS = ("day", "month")
VIABILITY_THRESHOLD = 50

COLUMNS: list[str] = [
    "referrals_received", *[f"received_{k}" for k in KINDS],
    "ineligible", *[f"ineligible_{r}" for r in REASONS],
    "offers_made", "offers_accepted", "offers_declined", *[f"declined_{r}" for r in REASONS], "offers_expired",
    "escalations", "admissions", "conversion_rate",
    "first_offer_median_min", "first_offer_p90_min", "acceptance_median_min", "acceptance_p90_min",
    "admission_median_min", "admission_p90_min", "admitted_within_24h", "admitted_within_24h_share",
    "received_urgent", "received_planned", "admissions_urgent", "admissions_planned",
    "admitted_on_time", "admitted_on_time_share",
    "avis_given", "avis_favourable", "avis_unfavourable", "avis_admitted", "avis_cancelled", "avis_ineligible",
    "avis_after_posting", "avis_after_posting_favourable", "avis_after_posting_unfavourable",
    "acceptances_pending_evaluation", "evaluations_confirmed", "evaluations_withdrawn",
    "evaluation_median_min", "evaluation_p90_min",
    "referrals_received_per_100k", "admissions_per_100k", "patient_days_per_100k",
    "ed_exits", "ed_stay_median_min", "ed_stay_p90_min",
    "cancellations", *[f"cancelled_{r}" for r in REASONS],
    "active_patients", "patient_days", "admissions_in_ehpad",
    "had_days", "census_days", "occupancy", "days_below_viability", "stale_share",
]
AVIS_COLUMNS = ["avis_given", "avis_favourable", "avis_unfavourable", "avis_admitted", "avis_cancelled", "avis_ineligible"]
AVIS_AFTER_POSTING_COLUMNS = ["avis_after_posting", "avis_after_posting_favourable", "avis_after_posting_unfavourable"]
EVALUATION_COLUMNS = ["acceptances_pending_evaluation", "evaluations_confirmed", "evaluations_withdrawn"]
# Columns that mean nothing at a level (null there rather than 0).
NOT_AT_HAD = {"referrals_received", *[f"received_{k}" for k in KINDS], "ineligible",
              *[f"ineligible_{r}" for r in REASONS], "escalations", "conversion_rate", "cancellations",
              *[f"cancelled_{r}" for r in REASONS], "ed_exits", "ed_stay_median_min", "ed_stay_p90_min",
              "received_urgent", "received_planned", *AVIS_COLUMNS}
PER_100K = {"referrals_received_per_100k": "referrals_received", "admissions_per_100k": "admissions",
            "patient_days_per_100k": "patient_days"}
HAD_DAY_COLUMNS = {"had_days", "census_days", "occupancy", "days_below_viability", "stale_share"}
RATIOS = {"conversion_rate", "first_offer_median_min", "first_offer_p90_min", "acceptance_median_min",
          "acceptance_p90_min", "admission_median_min", "admission_p90_min", "admitted_within_24h_share",
          "ed_stay_median_min", "ed_stay_p90_min", "evaluation_median_min", "evaluation_p90_min", "occupancy",
          "stale_share", "admitted_on_time_share", *PER_100K}


@dataclass(frozen=True)
class Query:
    level: str
    period: str
    start: date  # first day asked
    end: date  # last day asked (inclusive)
    departments: list[str] | None = None  # restrict to events of these departments
    hads: list[str] | None = None  # at HAD level, restrict to these HADs
    sources: list[str] | None = None  # at source level, restrict to these establishments


def _population(level: str, key: str) -> int | None:
    """Inhabitants of a department or a region (the COG data's communes summed); None elsewhere."""
    geography = Geography.load()
    if level == "department":
        department = geography.department(key)
        return department.population if department else None
    if level == "region":
        return sum(d.population for d in geography.departments_of_region(key)) or None
    return None


def period_start(day: date, period: str) -> date:
    return day.replace(day=1) if period == "month" else day


def next_period(day: date, period: str) -> date:
    if period == "day":
        return day + timedelta(days=1)
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def paris_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=PARIS).astimezone(UTC)


def _minutes(end: str) -> str:
    return f"(EXTRACT(EPOCH FROM ({end} - r.requested_at)) / 60)::float8"


# Pending acceptance (the offer's answer) → its confirmation or withdrawal; null when the pending
# acceptance is not in the facts.
EVALUATION_MIN = "(EXTRACT(EPOCH FROM (o.evaluated_at - o.outcome_at)) / 60)::float8"
EVALUATED_PENDING = "FILTER (WHERE o.outcome = 'ACCEPTED' AND o.pending_evaluation)"
ED_STAY_MIN = "(EXTRACT(EPOCH FROM (r.ed_exited_at - r.ed_arrival_at)) / 60)::float8"  # null without an arrival


def _pct(expr: str, p: float) -> str:
    return f"percentile_cont({p}) WITHIN GROUP (ORDER BY {expr})"


class _Sql:
    """Builds one family's statement with its parameters."""

    def __init__(self, q: Query, schema: str) -> None:
        self.q, self.s = q, f'"{schema}"'
        self.params: list[Any] = []

    def p(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def bucket(self, col: str) -> str:
        return f"date_trunc('{self.q.period}', {col} AT TIME ZONE {ZONE})::date"

    def in_periods(self, col: str) -> list[str]:
        """The rows whose `col`, on their department's clock, falls in the periods asked: an index
        range on Paris's days widened by a day, then the exact bounds of each department's clock
        (computed once per department by `clocks`, not per row)."""
        first, last = period_start(self.q.start, self.q.period), period_start(self.q.end, self.q.period)
        lo = self.p(paris_midnight(first) - ZONE_MARGIN)
        hi = self.p(paris_midnight(next_period(last, self.q.period)) + ZONE_MARGIN)
        return [f"{col} >= {lo}", f"{col} < {hi}",
                f"{col} >= COALESCE(g.period_start, {self.p(paris_midnight(first))})",
                f"{col} < COALESCE(g.period_end, {self.p(paris_midnight(next_period(last, self.q.period)))})"]

    def clocks(self) -> str:
        """department_regions with the instants the periods asked start and end on each
        department's clock (a derived table the planner keeps apart: computed per department)."""
        first, last = period_start(self.q.start, self.q.period), period_start(self.q.end, self.q.period)
        return (f"(SELECT department, region, time_zone, ({self.p(first)}::date::timestamp AT TIME ZONE time_zone) AS period_start, "
                f"({self.p(next_period(last, self.q.period))}::date::timestamp AT TIME ZONE time_zone) AS period_end "
                f"FROM department_regions OFFSET 0)")


async def _referral_family(conn, q: Query, schema: str, time_col: str, had_col: str | None,
                           selects: list[str]) -> list[asyncpg.Record]:
    if q.level == "had" and had_col is None:
        return []
    sql = _Sql(q, schema)
    key = {"department": "r.department", "region": "g.region", "source": "r.source_finess", "had": had_col}[q.level]
    where = [*sql.in_periods(f"r.{time_col}"), f"{key} IS NOT NULL"]
    where += _filters(sql, q, "r.department", key)
    text = (f"SELECT {sql.bucket('r.' + time_col)} AS period, {key} AS key, {', '.join(selects)} "
            f"FROM {sql.s}.referral_facts r LEFT JOIN {sql.clocks()} g ON g.department = r.department "
            f"WHERE {' AND '.join(where)} GROUP BY 1, 2")
    return await conn.fetch(text, *sql.params)


async def _offer_family(conn, q: Query, schema: str, time_col: str, selects: list[str],
                        extra: str = "TRUE", table: str = "offer_facts") -> list[asyncpg.Record]:
    """Rows of offer_facts, or of another table keyed like it (referral, department, HAD: avis_facts)."""
    sql = _Sql(q, schema)
    key = {"department": "o.department", "region": "g.region", "source": "r.source_finess", "had": "o.had_finess"}[q.level]
    where = [*sql.in_periods(f"o.{time_col}"), f"{key} IS NOT NULL", extra]
    where += _filters(sql, q, "o.department", key)
    join = f"LEFT JOIN {sql.s}.referral_facts r ON r.referral_id = o.referral_id " if q.level == "source" else ""
    text = (f"SELECT {sql.bucket('o.' + time_col)} AS period, {key} AS key, {', '.join(selects)} "
            f"FROM {sql.s}.{table} o {join}LEFT JOIN {sql.clocks()} g ON g.department = o.department "
            f"WHERE {' AND '.join(where)} GROUP BY 1, 2")
    return await conn.fetch(text, *sql.params)


async def _day_family(conn, q: Query, schema: str, f: DayFamily) -> list[asyncpg.Record]:
    """A counting family summed from its day counts (adapters.day_counts): at most one row per
    local day, department, establishment and HAD of the periods asked."""
    if q.level == "had" and f.had is None:
        return []
    sql = _Sql(q, schema)
    key = {"department": "NULLIF(d.department, '')", "region": "g.region",
           "source": "NULLIF(d.source_finess, '')", "had": "NULLIF(d.had, '')"}[q.level]
    first = period_start(q.start, q.period)
    where = [f"d.day >= {sql.p(first)}::date",
             f"d.day < {sql.p(next_period(period_start(q.end, q.period), q.period))}::date",
             f"{key} IS NOT NULL", *_filters(sql, q, "d.department", key)]
    sums = ", ".join(f'sum(d."{c}")::bigint AS "{c}"' for c in f.columns)
    join = "LEFT JOIN department_regions g ON g.department = d.department " if q.level == "region" else ""
    text = (f"SELECT date_trunc('{q.period}', d.day)::date AS period, {key} AS key, {sums} "
            f"FROM {sql.s}.{f.table} d {join}WHERE {' AND '.join(where)} "
            f'GROUP BY 1, 2 HAVING sum(d."{f.total}") > 0')
    return await conn.fetch(text, *sql.params)


def _filters(sql: _Sql, q: Query, department_col: str, key: str) -> list[str]:
    out = []
    if q.departments is not None:
        out.append(f"{department_col} = ANY({sql.p(q.departments)}::text[])")
    if q.hads is not None and q.level == "had":
        out.append(f"{key} = ANY({sql.p(q.hads)}::text[])")
    if q.sources is not None and q.level == "source":
        out.append(f"{key} = ANY({sql.p(q.sources)}::text[])")
    return out


def _window(sql: _Sql, first: date, last_end: date) -> tuple[str, str]:
    """Bounds (parameters) of the instants of the local days [first, last_end) on any department's
    clock: Paris midnights widened by a day."""
    return sql.p(paris_midnight(first) - ZONE_MARGIN), sql.p(paris_midnight(last_end) + ZONE_MARGIN)


async def _stays(conn, q: Query, schema: str, now: datetime) -> list[asyncpg.Record]:
    """Active patients and patient-days per period, from the stays (admission → discharge), on the
    clock of the referral's department; days from the department's tomorrow on are not counted.
    Only the stays overlapping the periods asked are read."""
    sql = _Sql(q, schema)
    key = {"department": "s.department", "region": "s.region", "source": "s.source_finess", "had": "s.admitted_had"}[q.level]
    first, last = period_start(q.start, q.period), period_start(q.end, q.period)
    lo, hi = _window(sql, first, next_period(last, q.period))
    where = [f"{key} IS NOT NULL", *_filters(sql, q, "s.department", key)]
    text = f"""
        WITH buckets AS (
            SELECT b::date AS a, (b + interval '1 {q.period}')::date AS e
            FROM generate_series({sql.p(first)}::date, {sql.p(last)}::date, interval '1 {q.period}') b),
        stays AS (
            SELECT r.department, r.source_finess, r.admitted_had, g.region,
                   (r.admitted_at AT TIME ZONE {ZONE})::date AS ad,
                   (r.discharged_at AT TIME ZONE {ZONE})::date AS dd,
                   ({sql.p(now)}::timestamptz AT TIME ZONE {ZONE})::date + 1 AS cap
            FROM {sql.s}.referral_facts r LEFT JOIN department_regions g ON g.department = r.department
            WHERE r.admitted_at IS NOT NULL AND {stay_range("r.")} && tstzrange({lo}, {hi}))
        SELECT bk.a AS period, {key} AS key, count(*) AS active_patients,
               sum(LEAST(COALESCE(s.dd, bk.e), bk.e, s.cap) - GREATEST(s.ad, bk.a)) AS patient_days
        FROM buckets bk
        JOIN stays s ON bk.a < s.cap AND s.ad < LEAST(bk.e, s.cap) AND (s.dd IS NULL OR (s.dd > bk.a AND s.dd > s.ad))
        WHERE {' AND '.join(where)}
        GROUP BY 1, 2"""
    return await conn.fetch(text, *sql.params)


async def _had_days(conn, q: Query, schema: str, now: datetime, stale_after: timedelta) -> list[asyncpg.Record]:
    """HAD-days on the clock of the HAD's department (that of its latest declaration), from its
    first declaration up to the department's today. Only the window is read: each HAD's patients
    in care on a day are its stays overlapping the window, its capacity and census the latest
    declaration before the day's end (those of the window and the last one before it)."""
    if q.level == "source":
        return []
    sql = _Sql(q, schema)
    key = {"department": "h.department", "region": "h.region", "had": "h.had_finess"}[q.level]
    first = period_start(q.start, q.period)
    last_end = next_period(period_start(q.end, q.period), q.period)
    lo_day, last = sql.p(first), sql.p(last_end - timedelta(days=1))
    lo, hi = _window(sql, first, last_end)
    now_p, stale = sql.p(now), sql.p(stale_after)
    where = [f"{key} IS NOT NULL", *_filters(sql, q, "h.department", key)]
    d = f"{sql.s}.declaration_facts"
    text = f"""
        WITH RECURSIVE hads AS (  -- each declaring HAD, one index probe apiece
            (SELECT had_finess FROM {d} ORDER BY had_finess LIMIT 1)
            UNION ALL
            SELECT (SELECT n.had_finess FROM {d} n WHERE n.had_finess > hads.had_finess ORDER BY n.had_finess LIMIT 1)
            FROM hads WHERE hads.had_finess IS NOT NULL),
        h AS (
            SELECT x.*, GREATEST({lo_day}::date, (x.first_at AT TIME ZONE x.tz)::date) AS lo_day,
                   LEAST({last}::date, ({now_p}::timestamptz AT TIME ZONE x.tz)::date) AS hi
            FROM (SELECT hads.had_finess, f.first_at, l.department, g.region, {ZONE} AS tz
                  FROM hads
                  CROSS JOIN LATERAL (SELECT declared_at AS first_at FROM {d} WHERE had_finess = hads.had_finess
                                      ORDER BY declared_at LIMIT 1) f
                  CROSS JOIN LATERAL (SELECT department FROM {d} WHERE had_finess = hads.had_finess
                                      ORDER BY declared_at DESC LIMIT 1) l
                  LEFT JOIN department_regions g ON g.department = l.department
                  WHERE hads.had_finess IS NOT NULL) x),
        hw AS (SELECT * FROM h WHERE lo_day <= hi AND {' AND '.join(where)}),
        stays AS (
            SELECT hw.had_finess, hw.lo_day, (r.admitted_at AT TIME ZONE hw.tz)::date AS ad,
                   (r.discharged_at AT TIME ZONE hw.tz)::date AS dd
            FROM {sql.s}.referral_facts r JOIN hw ON hw.had_finess = r.admitted_had
            WHERE r.admitted_at IS NOT NULL AND {stay_range("r.")} && tstzrange({lo}, {hi})),
        daily AS (  -- +1 from the admission day (or the window's first), -1 from the discharge day
            SELECT x.had_finess, x.day, sum(x.n) AS n FROM (
                SELECT had_finess, GREATEST(ad, lo_day) AS day, 1 AS n FROM stays WHERE dd IS NULL OR dd > ad
                UNION ALL
                SELECT had_finess, GREATEST(dd, lo_day), -1 FROM stays WHERE dd > ad) x
            GROUP BY 1, 2),
        dy AS (
            SELECT hw.had_finess, hw.department, hw.region, hw.first_at, s.day,
                   sum(COALESCE(dl.n, 0)) OVER (PARTITION BY hw.had_finess ORDER BY s.day) AS active,
                   (s.day::timestamp AT TIME ZONE hw.tz) AS d_start, ((s.day + 1)::timestamp AT TIME ZONE hw.tz) AS d_end
            FROM hw CROSS JOIN LATERAL (SELECT g::date AS day FROM generate_series(hw.lo_day, hw.hi, interval '1 day') g) s
            LEFT JOIN daily dl ON dl.had_finess = hw.had_finess AND dl.day = s.day),
        decl AS (  -- the declarations that can be a day's latest or end a stale spell of the window
            SELECT dc.had_finess, dc.declared_at, dc.authorised_places, dc.active_patients
            FROM {d} dc JOIN hw USING (had_finess) WHERE dc.declared_at >= {lo} AND dc.declared_at < {hi}
            UNION ALL
            SELECT hw.had_finess, p.* FROM hw CROSS JOIN LATERAL (
                SELECT declared_at, authorised_places, active_patients FROM {d}
                WHERE had_finess = hw.had_finess AND declared_at < {lo} ORDER BY declared_at DESC LIMIT 1) p
            UNION ALL
            SELECT hw.had_finess, n.* FROM hw CROSS JOIN LATERAL (
                SELECT declared_at, authorised_places, active_patients FROM {d}
                WHERE had_finess = hw.had_finess AND declared_at >= {hi} ORDER BY declared_at LIMIT 1) n),
        census_before AS (  -- the last census before the window, when the window's declarations carry none
            SELECT hw.had_finess, c.* FROM hw CROSS JOIN LATERAL (
                SELECT declared_at, active_patients FROM {d}
                WHERE had_finess = hw.had_finess AND declared_at < {lo} AND active_patients IS NOT NULL
                ORDER BY declared_at DESC LIMIT 1) c),
        timeline AS (  -- declarations (o = 1), a census from before the window (o = 2) and day ends (o = 0)
                       -- in time order; at one instant the day ends first: a declaration counts before its end
            SELECT had_finess, declared_at AS t, 1 AS o, authorised_places, active_patients, NULL::date AS day
            FROM decl WHERE declared_at < {hi}
            UNION ALL
            SELECT had_finess, declared_at, 2, NULL, active_patients, NULL FROM census_before
            UNION ALL
            SELECT had_finess, d_end, 0, NULL, NULL, day FROM dy),
        grouped AS (  -- a day is in the group of the latest declaration before it, and of the latest census
            SELECT t.*, count(*) FILTER (WHERE o = 1) OVER w AS capacity_group, count(active_patients) OVER w AS census_group
            FROM timeline t WINDOW w AS (PARTITION BY had_finess ORDER BY t, o)),
        latest AS (
            SELECT had_finess, day,
                   max(authorised_places) OVER (PARTITION BY had_finess, capacity_group) AS capacity,
                   max(active_patients) OVER (PARTITION BY had_finess, census_group) AS census
            FROM grouped),
        stale_spells AS (  -- from a declaration gone stale to the next one (or now)
            SELECT * FROM (
                SELECT had_finess, declared_at + {stale}::interval AS s,
                       COALESCE(lead(declared_at) OVER (PARTITION BY had_finess ORDER BY declared_at), {now_p}::timestamptz) AS e
                FROM decl) x WHERE s < e),
        stale_by_day AS (
            SELECT dy.had_finess, dy.day,
                   sum(EXTRACT(EPOCH FROM LEAST(st.e, dy.d_end, {now_p}::timestamptz) - GREATEST(st.s, dy.d_start)))::float8 AS stale_s
            FROM dy JOIN stale_spells st ON st.had_finess = dy.had_finess
            WHERE st.s < LEAST(st.e, dy.d_end, {now_p}::timestamptz) AND st.e > dy.d_start AND st.s < dy.d_end
            GROUP BY 1, 2),
        per_day AS (
            SELECT dy.*, l.capacity, l.census, COALESCE(sb.stale_s, 0) AS stale_s,
                EXTRACT(EPOCH FROM GREATEST(LEAST(dy.d_end, {now_p}::timestamptz) - GREATEST(dy.d_start, dy.first_at),
                                            interval '0'))::float8 AS observed
            FROM dy JOIN latest l ON l.had_finess = dy.had_finess AND l.day = dy.day
            LEFT JOIN stale_by_day sb ON sb.had_finess = dy.had_finess AND sb.day = dy.day)
        SELECT date_trunc('{q.period}', dy.day)::date AS period, {key.replace("h.", "dy.")} AS key, count(*) AS had_days,
               count(*) FILTER (WHERE COALESCE(dy.census, dy.active) < {VIABILITY_THRESHOLD}) AS days_below_viability,
               count(dy.census) AS census_days,
               sum(COALESCE(dy.census, dy.active)) AS occupied_days, sum(dy.capacity) AS capacity_days,
               sum(dy.observed) AS observed_s, sum(dy.stale_s) AS stale_s
        FROM per_day dy
        GROUP BY 1, 2"""
    return await conn.fetch(text, *sql.params)


async def compute(conn: asyncpg.Connection, schema: str, q: Query, *, stale_after: timedelta,
                  now: datetime | None = None) -> list[dict[str, Any]]:
    """Every indicator of the set, one row per (period, key) with any activity, sorted."""
    now = now or datetime.now(UTC)
    rows: dict[tuple[date, str], dict[str, Any]] = {}

    def put(records, fn) -> None:
        for rec in records:
            row = rows.setdefault((rec["period"], rec["key"]), {})
            fn(row, rec)

    def copy(row, rec) -> None:
        for k, v in rec.items():
            if k not in ("period", "key"):
                row[k] = v

    for family in FAMILIES:  # the counting families, from their day counts
        put(await _day_family(conn, q, schema, family), copy)
    put(await _referral_family(conn, q, schema, "first_offer_at", "r.first_offer_had", [
        f"{_pct(_minutes('r.first_offer_at'), 0.5)} AS first_offer_median_min",
        f"{_pct(_minutes('r.first_offer_at'), 0.9)} AS first_offer_p90_min"]), copy)
    put(await _referral_family(conn, q, schema, "accepted_at", "r.accepted_had", [
        f"{_pct(_minutes('r.accepted_at'), 0.5)} AS acceptance_median_min",
        f"{_pct(_minutes('r.accepted_at'), 0.9)} AS acceptance_p90_min"]), copy)
    put(await _referral_family(conn, q, schema, "admitted_at", "r.admitted_had", [
        "count(*) AS admissions",
        f"{_pct(_minutes('r.admitted_at'), 0.5)} FILTER (WHERE {URGENT}) AS admission_median_min",
        f"{_pct(_minutes('r.admitted_at'), 0.9)} FILTER (WHERE {URGENT}) AS admission_p90_min",
        f"count(*) FILTER (WHERE {URGENT}) AS admissions_urgent", f"count(*) FILTER (WHERE {PLANNED}) AS admissions_planned",
        f"count(*) FILTER (WHERE {URGENT} AND r.admitted_at - r.requested_at <= interval '24 hours') AS admitted_within_24h",
        f"count(r.requested_at) FILTER (WHERE {URGENT}) AS admitted_with_request",
        f"count(*) FILTER (WHERE {PLANNED} AND r.admitted_at < {END_OF_PLANNED_DAY}) AS admitted_on_time",
        "count(*) FILTER (WHERE COALESCE(r.admitted_place, r.place_of_care) = 'EHPAD') AS admissions_in_ehpad"]), copy)
    put(await _referral_family(conn, q, schema, "ed_exited_at", None, [
        "count(*) AS ed_exits",
        f"{_pct(ED_STAY_MIN, 0.5)} AS ed_stay_median_min",
        f"{_pct(ED_STAY_MIN, 0.9)} AS ed_stay_p90_min"]), copy)
    put(await _offer_family(conn, q, schema, "evaluated_at", [
        "count(*) FILTER (WHERE o.evaluation = 'CONFIRMED') AS evaluations_confirmed",
        "count(*) FILTER (WHERE o.evaluation = 'WITHDRAWN') AS evaluations_withdrawn",
        f"{_pct(EVALUATION_MIN, 0.5)} {EVALUATED_PENDING} AS evaluation_median_min",
        f"{_pct(EVALUATION_MIN, 0.9)} {EVALUATED_PENDING} AS evaluation_p90_min"],
        extra="o.evaluation IS NOT NULL"), copy)
    put(await _stays(conn, q, schema, now), copy)
    put(await _had_days(conn, q, schema, now, stale_after), copy)

    out = []
    for (period, key), raw in sorted(rows.items()):
        row: dict[str, Any] = {"period": period.isoformat()[:7] if q.period == "month" else period.isoformat(),
                               "key": key}
        for c in COLUMNS:
            row[c] = None if c in RATIOS else int(raw.get(c) or 0)
        received, cohort = raw.get("referrals_received") or 0, raw.get("cohort_admitted") or 0
        row["conversion_rate"] = cohort / received if received else None
        for c in ("first_offer_median_min", "first_offer_p90_min", "acceptance_median_min", "acceptance_p90_min",
                  "admission_median_min", "admission_p90_min", "ed_stay_median_min", "ed_stay_p90_min",
                  "evaluation_median_min", "evaluation_p90_min"):
            row[c] = raw.get(c)
        with_request = raw.get("admitted_with_request") or 0
        row["admitted_within_24h_share"] = (raw.get("admitted_within_24h") or 0) / with_request if with_request else None
        planned = row["admissions_planned"]
        row["admitted_on_time_share"] = row["admitted_on_time"] / planned if planned else None
        population = _population(q.level, key)
        for rate, count in PER_100K.items():
            row[rate] = row[count] * 100_000 / population if population else None
        capacity_days = raw.get("capacity_days")
        row["occupancy"] = (float(raw.get("occupied_days") or 0) / capacity_days) if capacity_days else None
        observed = raw.get("observed_s")
        row["stale_share"] = (raw.get("stale_s") or 0.0) / observed if observed else None
        for c in RATIOS:  # 6 decimals: the API, the CSV and the spreadsheet carry the same digits
            if row[c] is not None:
                row[c] = round(float(row[c]), 6)
        if q.level == "had":
            for c in NOT_AT_HAD:
                row[c] = None
        if q.level == "source":
            for c in HAD_DAY_COLUMNS:
                row[c] = None
        out.append(row)
    return out
