"""PostgreSQL access: one schema per service, plain SQL migrations applied at start-up."""

from __future__ import annotations

import logging
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
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    except asyncpg.UniqueViolationError:
        pass  # another instance created it at the same moment (IF NOT EXISTS is not atomic)
    finally:
        await conn.close()


def _sql_files(package: str) -> list[Traversable]:
    folder = resources.files(package)
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


async def migrate(pool: asyncpg.Pool, schema: str, migrations_package: str) -> list[str]:
    """Apply the platform tables, then the service's numbered migrations not applied yet."""
    applied_now: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _MIGRATION_LOCK_NAMESPACE, schema)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        # The platform's own tables (outbox, inbox) first, then the service's.
        steps = [(f"platform/{f.name}", f) for f in _sql_files("reflexe_common.sql")]
        steps += [(f.name, f) for f in _sql_files(migrations_package)]
        for name, file in steps:
            if name in done:
                continue
            await conn.execute(file.read_text(encoding="utf-8"))
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
    if applied_now:
        log.info("migrations applied", extra={"schema": schema, "migrations": applied_now})
    return applied_now
