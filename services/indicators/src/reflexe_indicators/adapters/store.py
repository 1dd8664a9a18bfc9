"""Fact tables, one PostgreSQL schema per generation (``indicators_g<N>``), and the
``generations`` table that says which one the API reads (``current``) and which ones the live
consumer feeds (``current`` and ``building``). A replay builds a new generation next to the
current one and switches over in one UPDATE: readers see the old figures or the new ones,
never a mix.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from reflexe_common.geography import Geography
from reflexe_indicators.adapters import day_counts
from reflexe_indicators.domain.facts import TABLES, Delta, FactTable


def generation_schema(base: str, generation: int) -> str:
    return f"{base}_g{generation}"


def stay_range(prefix: str = "") -> str:
    """A stay (admission → discharge) as a range of instants, so that an index finds the stays
    overlapping a window without reading the whole history. A stay discharged at or before its
    admission is an empty range (it counts on no day)."""
    return (f"tstzrange({prefix}admitted_at, CASE WHEN {prefix}discharged_at IS NULL THEN NULL "
            f"ELSE GREATEST({prefix}admitted_at, {prefix}discharged_at) END)")


def _ddl(schema: str, indexes: bool = True) -> str:
    """The generation's schema and tables; its secondary indexes too unless it is about to be
    bulk-loaded by a replay, which builds them once loaded (create_indexes): one sorted build
    costs less than maintaining every index through a million upserts."""
    tables = []
    for t in TABLES:
        cols = ", ".join(f"{c} {ty}" for c, ty in t.types.items())
        tables.append(f'CREATE TABLE IF NOT EXISTS "{schema}".{t.name} ({cols}, PRIMARY KEY ({", ".join(t.key)}))')
        # A generation created before a column was added gets it empty (a replay fills it).
        added = ", ".join(f"ADD COLUMN IF NOT EXISTS {c} {ty}" for c, ty in t.types.items())
        tables.append(f'ALTER TABLE "{schema}".{t.name} {added}')
    return ";\n".join([f'CREATE SCHEMA IF NOT EXISTS "{schema}"', *tables, *day_counts.ddl(schema),
                       *(_indexes(schema) if indexes else [])]) + ";"


def _indexes(schema: str) -> list[str]:
    return [
        # Each time column an indicator is counted by: a month reads its rows, not the table.
        *(f'CREATE INDEX IF NOT EXISTS rf_{column.removesuffix("_at")} ON "{schema}".referral_facts ({column})'
          for column in ("requested_at", "admitted_at", "ineligible_at", "escalated_at", "cancelled_at",
                         "first_offer_at", "accepted_at", "ed_exited_at")),
        f'CREATE INDEX IF NOT EXISTS rf_admitted_had ON "{schema}".referral_facts (admitted_had, admitted_at)',
        f'CREATE INDEX IF NOT EXISTS of_made ON "{schema}".offer_facts (made_at)',
        f'CREATE INDEX IF NOT EXISTS of_outcome ON "{schema}".offer_facts (outcome_at)',
        f'CREATE INDEX IF NOT EXISTS of_referral ON "{schema}".offer_facts (referral_id)',
        f'CREATE INDEX IF NOT EXISTS of_evaluated ON "{schema}".offer_facts (evaluated_at)',
        f'CREATE INDEX IF NOT EXISTS av_given ON "{schema}".avis_facts (given_at)',
        # The stays overlapping a window (stay_range), and each HAD's last
        # census before one, found without reading the whole history.
        f'CREATE INDEX IF NOT EXISTS rf_stay ON "{schema}".referral_facts USING gist ({stay_range()}) '
        "WHERE admitted_at IS NOT NULL",
        f'CREATE INDEX IF NOT EXISTS df_census ON "{schema}".declaration_facts (had_finess, declared_at) '
        "WHERE active_patients IS NOT NULL",
    ]


async def create_indexes(conn: asyncpg.Connection, schema: str) -> None:
    """A replayed generation's secondary indexes and day counts, built once its facts are loaded."""
    await conn.execute(";\n".join(_indexes(schema)))
    await day_counts.build(conn, schema)


def upsert_sql(schema: str, t: FactTable, source: str | None = None) -> str:
    """One statement upserting N rows given as one array per column (unnest), or read from the
    table `source`, with the merge rules of domain.facts.merge: the result does not depend on
    the order of events."""
    cols = t.columns
    sets = [f"{c} = COALESCE(f.{c}, EXCLUDED.{c})" for c in t.first]
    for time_col, companions in t.earliest:
        newer = f"(EXCLUDED.{time_col} IS NOT NULL AND (f.{time_col} IS NULL OR EXCLUDED.{time_col} < f.{time_col}))"
        for c in (time_col, *companions):
            sets.append(f"{c} = CASE WHEN {newer} THEN EXCLUDED.{c} ELSE f.{c} END")
    arrays = ", ".join(f"${i + 1}::{t.types[c]}[]" for i, c in enumerate(cols))
    conflict = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
    rows = f"SELECT * FROM unnest({arrays})" if source is None else f"SELECT {', '.join(cols)} FROM {source}"
    return (f'INSERT INTO "{schema}".{t.name} AS f ({", ".join(cols)}) {rows} '
            f"ON CONFLICT ({', '.join(t.key)}) {conflict}")


async def upsert_rows(conn: asyncpg.Connection, schema: str, t: FactTable, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = [[r.get(c) for r in rows] for c in t.columns]
    await conn.execute(upsert_sql(schema, t), *columns)


def _stage(t: FactTable) -> str:
    return f"replay_{t.name}"


async def create_stages(conn: asyncpg.Connection, schema: str) -> None:
    """The temporary tables a replay's batches are copied into, on the connection it writes with
    (made anew: a pooled connection may hold those of an earlier generation)."""
    await conn.execute(";".join(f'DROP TABLE IF EXISTS pg_temp.{_stage(t)}; CREATE TEMP TABLE {_stage(t)} '
                                f'(LIKE "{schema}".{t.name}) ON COMMIT DELETE ROWS' for t in TABLES))


async def upsert_batch(conn: asyncpg.Connection, schema: str, rows: dict[str, list[dict[str, Any]]],
                       then: str = "") -> None:
    """Many rows of every table at once (a replay's batch), inside the caller's transaction, on a
    connection with its stages (create_stages): copied into them, then upserted from them in one
    round trip with `then` (statements without parameters). COPY encodes the rows far cheaper
    than arrays of every column, whose elements the driver inspects one by one."""
    statements = []
    for t in TABLES:
        if rows[t.name]:
            columns = t.columns
            await conn.copy_records_to_table(_stage(t), records=[tuple(map(row.get, columns)) for row in rows[t.name]],
                                             columns=columns)
            statements.append(upsert_sql(schema, t, source=_stage(t)))
    await conn.execute(";".join([*statements, then]))


async def apply(conn: asyncpg.Connection, schema: str, deltas: list[Delta]) -> None:
    """The live path: one event's deltas (one row per table at most) into one generation."""
    for table in TABLES:
        rows = [row for t, row in deltas if t is table]
        await upsert_rows(conn, schema, table, rows)


# -- generations -------------------------------------------------------------------------------

async def live_generations(conn: asyncpg.Connection) -> list[int]:
    return [r["generation"] for r in await conn.fetch(
        "SELECT generation FROM generations WHERE state IN ('current', 'building') ORDER BY generation")]


async def current_generation(conn: asyncpg.Connection) -> int | None:
    return await conn.fetchval("SELECT generation FROM generations WHERE state = 'current'")


async def ensure_first_generation(pool: asyncpg.Pool, base: str) -> int:
    """At start-up: the current generation exists with its tables (generation 1 the first time)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE generations IN EXCLUSIVE MODE")
        current = await current_generation(conn)
        if current is None:
            current = await conn.fetchval("SELECT COALESCE(max(generation), 0) + 1 FROM generations")
            await conn.execute(_ddl(generation_schema(base, current)))
            await conn.execute("INSERT INTO generations (generation, state, switched_at) VALUES ($1, 'current', now())",
                               current)
        await conn.execute(_ddl(generation_schema(base, current)))  # idempotent
        await _load_regions(conn)
        # Counted from its facts once (a generation from before the day counts), kept from then on.
        await day_counts.build(conn, generation_schema(base, current))
    return current


async def _load_regions(conn: asyncpg.Connection) -> None:
    departments = Geography.load().departments
    await conn.execute(
        "INSERT INTO department_regions (department, region, time_zone) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) "
        "ON CONFLICT (department) DO UPDATE SET region = EXCLUDED.region, time_zone = EXCLUDED.time_zone",
        list(departments), [d.region_code for d in departments.values()],
        [d.time_zone.key for d in departments.values()])


async def start_generation(conn: asyncpg.Connection, base: str) -> int | None:
    """Register a building generation with empty tables; None when one is already building."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE generations IN EXCLUSIVE MODE")
        if await conn.fetchval("SELECT 1 FROM generations WHERE state = 'building'"):
            return None
        generation = await conn.fetchval("SELECT COALESCE(max(generation), 0) + 1 FROM generations")
        schema = generation_schema(base, generation)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(_ddl(schema, indexes=False))
        await conn.execute("INSERT INTO generations (generation, state, started_at) VALUES ($1, 'building', now())",
                           generation)
        return generation


async def switch_to(conn: asyncpg.Connection, base: str, generation: int, keep_retired: int = 1) -> None:
    """The atomic switch-over: the building generation becomes current, the old one retired."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE generations IN EXCLUSIVE MODE")
        await conn.execute("UPDATE generations SET state = 'retired' WHERE state = 'current'")
        await conn.execute("UPDATE generations SET state = 'current', switched_at = now() WHERE generation = $1",
                           generation)
        # Old generations beyond the newest retired one are dropped (a reader may still hold the
        # previous one for the duration of its query).
        old = await conn.fetch("SELECT generation FROM generations WHERE state = 'retired' ORDER BY generation DESC "
                               "OFFSET $1", keep_retired)
        for r in old:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{generation_schema(base, r["generation"])}" CASCADE')
            await conn.execute("UPDATE generations SET state = 'dropped' WHERE generation = $1", r["generation"])
