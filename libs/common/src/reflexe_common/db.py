"""PostgreSQL access: one schema per service, plain SQL migrations with their checksums.

Locally each service applies its migrations at start. In production they run once per release
(`python -m reflexe_common.migrate`, a Job), and the pods only verify them
(REFLEXE_MIGRATE_AT_START=false): a migration file edited after it was applied would leave
databases that ran the old and the new text apart, so each applied migration's SHA-256 is
recorded and a changed one stops the migration and the service.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

log = logging.getLogger(__name__)

# Serialises concurrent migrations of the same schema (two instances starting together).
_MIGRATION_LOCK_NAMESPACE = 7_263_001


async def create_pool(database_url: str, schema: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    await _ensure_schema(database_url, schema)
    return await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"reflexe-{schema}"},
    )


async def _ensure_schema(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        # Look first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
        # schema exists, which a role owning only its schema (created by the operator) lacks.
        if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            return
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    except asyncpg.UniqueViolationError:
        pass  # another instance created it at the same moment (IF NOT EXISTS is not atomic)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


class MigrationChanged(RuntimeError):
    """An applied migration's file no longer has the text that was applied."""


class MigrationsPending(RuntimeError):
    """Migrations the code needs are not applied, and the service may not apply them."""


def _sql_files(package: str) -> list[Traversable]:
    folder = resources.files(package)
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


def migrations(migrations_package: str) -> list[Migration]:
    """The platform's own tables (outbox, inbox) first, then the service's numbered migrations."""
    steps = [Migration(f"platform/{f.name}", f.read_text(encoding="utf-8")) for f in _sql_files("reflexe_common.sql")]
    steps += [Migration(f.name, f.read_text(encoding="utf-8")) for f in _sql_files(migrations_package)]
    return steps


def _check_unchanged(schema: str, migration: Migration, recorded: str | None) -> None:
    if recorded is not None and recorded != migration.checksum:
        raise MigrationChanged(
            f"migration {schema}/{migration.name} was applied with checksum {recorded}, its file now has "
            f"{migration.checksum}: an applied migration is never edited, add a new one")


async def migrate(pool: asyncpg.Pool, schema: str, migrations_package: str) -> list[str]:
    """Apply the migrations not applied yet, recording each one's checksum; refuse to go on when
    an applied one has changed. Returns the names applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _MIGRATION_LOCK_NAMESPACE, schema)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), checksum text)"
        )
        # Schemas migrated before checksums were recorded: their rows get one below.
        await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
        done = {r["name"]: r["checksum"] for r in await conn.fetch("SELECT name, checksum FROM schema_migrations")}
        for migration in migrations(migrations_package):
            if migration.name in done:
                _check_unchanged(schema, migration, done[migration.name])
                if done[migration.name] is None:
                    await conn.execute("UPDATE schema_migrations SET checksum = $2 WHERE name = $1",
                                       migration.name, migration.checksum)
                continue
            await conn.execute(migration.sql)
            await conn.execute("INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                               migration.name, migration.checksum)
            applied_now.append(migration.name)
    if applied_now:
        log.info("migrations applied", extra={"schema": schema, "migrations": applied_now})
    return applied_now


async def verify_migrated(pool: asyncpg.Pool, schema: str, migrations_package: str) -> None:
    """Every migration this code knows is applied, with the text it has now. Later ones (a newer
    release's, during a rollout) are allowed: migrations only add."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            raise MigrationsPending(f"schema {schema} has no migrations applied: run the release's migration "
                                    "Job (python -m reflexe_common.migrate) first")
        has_checksums = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 "
            "AND table_name = 'schema_migrations' AND column_name = 'checksum'", schema)
        query = "SELECT name, checksum FROM schema_migrations" if has_checksums else \
            "SELECT name, NULL::text AS checksum FROM schema_migrations"
        done = {r["name"]: r["checksum"] for r in await conn.fetch(query)}
    pending = []
    for migration in migrations(migrations_package):
        if migration.name not in done:
            pending.append(migration.name)
        else:
            _check_unchanged(schema, migration, done[migration.name])
    if pending:
        raise MigrationsPending(f"schema {schema} lacks migrations {', '.join(pending)}: run the release's "
                                "migration Job (python -m reflexe_common.migrate) first")


async def prepare_schema(pool: asyncpg.Pool, schema: str, migrations_package: str, migrate_at_start: bool) -> None:
    """At a service's start: migrate (locally) or verify that the release's Job did (production)."""
    if migrate_at_start:
        await migrate(pool, schema, migrations_package)
    else:
        await verify_migrated(pool, schema, migrations_package)
