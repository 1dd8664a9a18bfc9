"""Day × department counts kept beside the facts, so that a month's counting indicators sum at
most 31 rows per department and key instead of reading every fact of the month.

Each family is the counts of one kind of event (referrals received, declared ineligible,
escalated, cancelled; offers made, answered; avis after posting), one row per local day of the
department (its own clock), department, sending establishment and HAD. The rows are maintained
from the facts themselves, not from the events: statement-level triggers on each fact table
subtract what the changed rows contributed before and add what they contribute now, so every
write path (the live consumer's upserts, a replay's batches) keeps them exact, whatever the order
events arrive in. An offer's or an avis's sending establishment is its referral's: when a
referral's establishment becomes known after its offers were counted, they move to it.

A replayed generation is loaded without the triggers and counted once loaded (`build`), like its
indexes; `build` also fills a generation that existed before these tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import asyncpg

from reflexe_common.vocabulary import Reason, SourceKind

REASONS = [r.value for r in Reason]
KINDS = [k.value for k in SourceKind]
PLANNED = "(r.urgency IS NOT DISTINCT FROM 'PLANNED' AND r.planned_date IS NOT NULL)"
URGENT = f"(NOT {PLANNED})"
NO_KEY = ""  # a key column without a value (a primary key cannot hold null)


def reason_is(col: str, code: str) -> str:
    """A reason outside the national code list counts as OTHER."""
    known = ", ".join(f"'{r}'" for r in REASONS if r != "OTHER")
    if code == "OTHER":
        return f"({col} IS NULL OR {col} NOT IN ({known}))"
    return f"{col} = '{code}'"


@dataclass(frozen=True)
class DayFamily:
    name: str  # its table: <name>_days
    facts: str  # the fact table it counts (referral_facts: rows read as r; the others as o)
    time: str  # the time column whose local day the row counts on
    had: str | None  # the HAD a row counts for at HAD level (None: not counted at HAD level)
    total: str  # the indicator column counting every row of the family
    counts: dict[str, str] = field(default_factory=dict)  # indicator column → condition on the row
    where: str = "TRUE"  # which rows count at all

    @property
    def table(self) -> str:
        return f"{self.name}_days"

    @property
    def alias(self) -> str:
        return "r" if self.facts == "referral_facts" else "o"

    @property
    def columns(self) -> list[str]:
        return [self.total, *self.counts]


FAMILIES = (
    DayFamily("requested", "referral_facts", "requested_at", None, "referrals_received", {
        **{f"received_{k}": f"r.source_kind = '{k}'" for k in KINDS},
        "cohort_admitted": "r.admitted_at IS NOT NULL",
        "received_urgent": URGENT, "received_planned": PLANNED,
        "avis_given": "r.avis IS NOT NULL", "avis_favourable": "r.avis = 'FAVOURABLE'",
        "avis_unfavourable": "r.avis = 'UNFAVOURABLE'",
        "avis_admitted": "r.avis IS NOT NULL AND r.admitted_at IS NOT NULL",
        "avis_cancelled": "r.avis IS NOT NULL AND r.cancelled_at IS NOT NULL",
        "avis_ineligible": "r.avis IS NOT NULL AND r.ineligible_at IS NOT NULL"}),
    DayFamily("ineligible", "referral_facts", "ineligible_at", None, "ineligible",
              {f"ineligible_{c}": reason_is("r.ineligible_reason", c) for c in REASONS}),
    DayFamily("escalated", "referral_facts", "escalated_at", None, "escalations"),
    DayFamily("cancelled", "referral_facts", "cancelled_at", None, "cancellations",
              {f"cancelled_{c}": reason_is("r.cancel_reason", c) for c in REASONS}),
    DayFamily("offers_made", "offer_facts", "made_at", "had_finess", "offers_made"),
    DayFamily("offers_answered", "offer_facts", "outcome_at", "had_finess", "offers_answered", {
        "offers_accepted": "o.outcome = 'ACCEPTED'", "offers_declined": "o.outcome = 'DECLINED'",
        **{f"declined_{c}": f"o.outcome = 'DECLINED' AND {reason_is('o.reason', c)}" for c in REASONS},
        "offers_expired": "o.outcome = 'EXPIRED'",
        "acceptances_pending_evaluation": "o.outcome = 'ACCEPTED' AND o.pending_evaluation"},
              where="o.outcome IN ('ACCEPTED', 'DECLINED', 'EXPIRED')"),
    DayFamily("avis_after_posting", "avis_facts", "given_at", "had_finess", "avis_after_posting", {
        "avis_after_posting_favourable": "o.avis = 'FAVOURABLE'",
        "avis_after_posting_unfavourable": "o.avis = 'UNFAVOURABLE'"}),
)
KEY = ("day", "department", "source_finess", "had")


def _ddl(schema: str, f: DayFamily) -> str:
    counts = ", ".join(f'"{c}" bigint NOT NULL' for c in f.columns)
    return (f'CREATE TABLE IF NOT EXISTS "{schema}".{f.table} (day date NOT NULL, department text NOT NULL, '
            f"source_finess text NOT NULL, had text NOT NULL, {counts}, PRIMARY KEY ({', '.join(KEY)}))")


def ddl(schema: str) -> list[str]:
    return [_ddl(schema, f) for f in FAMILIES]


def _add(schema: str, f: DayFamily, rows: str, source: str | None = None) -> str:
    """Adds to the family's days what `rows` contribute, each row weighted by its column `sign`
    (+1 or -1); `rows` has the fact table's columns. `source`: the sending establishment's
    expression when not the referral's current one."""
    a = f.alias
    if source is None and f.facts != "referral_facts":  # the referral's establishment, when its row is there
        referral = f'LEFT JOIN "{schema}".referral_facts x ON x.referral_id = o.referral_id '
        source = "x.source_finess"
    else:
        referral = ""
        source = source or "r.source_finess"
    sums = ", ".join([f"sum({a}.sign)", *(f"COALESCE(sum({a}.sign) FILTER (WHERE {cond}), 0)"
                                          for cond in f.counts.values())])
    sets = ", ".join(f'"{c}" = d."{c}" + EXCLUDED."{c}"' for c in f.columns)
    columns = ", ".join(f'"{c}"' for c in f.columns)
    return (f'INSERT INTO "{schema}".{f.table} AS d ({", ".join(KEY)}, {columns}) '
            f"SELECT ({a}.{f.time} AT TIME ZONE COALESCE(g.time_zone, 'Europe/Paris'))::date, "
            f"COALESCE({a}.department, ''), COALESCE({source}, ''), "
            f"COALESCE({f'{a}.{f.had}' if f.had else 'NULL'}, ''), {sums} "
            f"FROM {rows} {a} {referral}LEFT JOIN department_regions g ON g.department = {a}.department "
            f"WHERE {a}.{f.time} IS NOT NULL AND {f.where} GROUP BY 1, 2, 3, 4 "
            f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {sets}")


# Each fact table's key, to pair a changed row's old and new versions.
_KEYS = {"referral_facts": ("referral_id",), "offer_facts": ("offer_id",), "avis_facts": ("referral_id", "given_at")}


def _read(f: DayFamily) -> list[str]:
    """The fact columns a family's rows depend on."""
    text = " ".join([f.where, *f.counts.values()])
    named = {c for c in re.findall(rf"\b{f.alias}\.(\w+)", text)}
    return sorted(named | {f.time, "department", *([f.had] if f.had else []),
                           *(["source_finess"] if f.facts == "referral_facts" else [])})


def _changes(f: DayFamily, operation: str) -> str:
    """The rows a statement changed, signed, read from the trigger's transition tables; an update
    that leaves every column the family reads as it was changes nothing."""
    if operation == "INSERT":
        return "(SELECT 1 AS sign, * FROM new_rows)"
    if operation == "DELETE":
        return "(SELECT -1 AS sign, * FROM old_rows)"
    read = _read(f)
    differs = f"({', '.join(f'o.{c}' for c in read)}) IS DISTINCT FROM ({', '.join(f'n.{c}' for c in read)})"
    pair = f"old_rows o JOIN new_rows n USING ({', '.join(_KEYS[f.facts])})"
    return (f"(SELECT -1 AS sign, o.* FROM {pair} WHERE {differs} "
            f"UNION ALL SELECT 1, n.* FROM {pair} WHERE {differs})")


def _moves(schema: str, operation: str) -> list[str]:
    """The offers and avis of referrals whose sending establishment a statement changed (set
    after they were counted, or the referral's row inserted after them): counted again under it."""
    if operation == "UPDATE":
        moved = ("(SELECT n.referral_id, o.source_finess AS was, n.source_finess AS now FROM new_rows n "
                 "JOIN old_rows o USING (referral_id) WHERE n.source_finess IS DISTINCT FROM o.source_finess)")
    elif operation == "INSERT":
        moved = "(SELECT referral_id, NULL::text AS was, source_finess AS now FROM new_rows WHERE source_finess IS NOT NULL)"
    else:
        moved = "(SELECT referral_id, source_finess AS was, NULL::text AS now FROM old_rows WHERE source_finess IS NOT NULL)"
    out = []
    for f in FAMILIES:
        if f.facts == "referral_facts":
            continue
        rows = (f"(SELECT -1 AS sign, m.was AS moved_source, x.* FROM \"{schema}\".{f.facts} x JOIN {moved} m USING (referral_id) "
                f"UNION ALL SELECT 1, m.now, x.* FROM \"{schema}\".{f.facts} x JOIN {moved} m USING (referral_id))")
        out.append(_add(schema, f, rows, source="o.moved_source"))
    return out


def _trigger_function(schema: str, facts: str, operation: str) -> str:
    statements = [_add(schema, f, _changes(f, operation)) for f in FAMILIES if f.facts == facts]
    moves = ";\n    ".join(_moves(schema, operation)) if facts == "referral_facts" else ""
    body = ";\n  ".join(statements)
    # An upsert fires both statement triggers whatever it did: the one with nothing to count returns at once.
    rows = "old_rows" if operation == "DELETE" else "new_rows"
    if moves and operation == "UPDATE":
        moves = ("IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o USING (referral_id) "
                 f"WHERE n.source_finess IS DISTINCT FROM o.source_finess) THEN\n    {moves};\n  END IF;")
    elif moves:
        moves = f"{moves};"
    return (f'CREATE OR REPLACE FUNCTION "{schema}".{facts}_days_{operation.lower()}() RETURNS trigger '
            f"LANGUAGE plpgsql AS $fn$\nBEGIN\n  IF NOT EXISTS (SELECT 1 FROM {rows}) THEN\n    RETURN NULL;\n  END IF;\n"
            f"  {body};\n  {moves}\n  RETURN NULL;\nEND\n$fn$")


def _transitions(operation: str) -> str:
    return {"INSERT": "NEW TABLE AS new_rows", "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            "DELETE": "OLD TABLE AS old_rows"}[operation]


async def build(conn: asyncpg.Connection, schema: str) -> None:
    """The generation's day counts computed from its facts and kept from then on by triggers;
    nothing when they are already kept. Writers wait meanwhile (the facts are locked), so no
    change slips between the count and the triggers."""
    async with conn.transaction():
        facts = sorted({f.facts for f in FAMILIES})
        locked = ", ".join(f'"{schema}".{t}' for t in facts)
        await conn.execute(f"LOCK TABLE {locked} IN SHARE ROW EXCLUSIVE MODE")
        kept = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND t.tgname LIKE '%\\_days\\_%'", schema)
        if kept == len(facts) * 3:
            return
        for f in FAMILIES:
            await conn.execute(_ddl(schema, f))
            await conn.execute(f'TRUNCATE "{schema}".{f.table}')
            await conn.execute(_add(schema, f, f'(SELECT 1 AS sign, * FROM "{schema}".{f.facts})'))
        for t in facts:
            for operation in ("INSERT", "UPDATE", "DELETE"):
                await conn.execute(_trigger_function(schema, t, operation))
                await conn.execute(f'DROP TRIGGER IF EXISTS {t}_days_{operation.lower()} ON "{schema}".{t}')
                await conn.execute(
                    f'CREATE TRIGGER {t}_days_{operation.lower()} AFTER {operation} ON "{schema}".{t} '
                    f"REFERENCING {_transitions(operation)} FOR EACH STATEMENT "
                    f'EXECUTE FUNCTION "{schema}".{t}_days_{operation.lower()}()')
