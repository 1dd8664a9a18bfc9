"""Migrations on the real PostgreSQL: each applied migration's checksum is recorded; an applied
migration whose file changed stops both the migration Job and a starting service; a service that
may not migrate refuses to start while the release's migrations are not applied; schemas migrated
before checksums existed get them; an existing schema is not created again."""

from __future__ import annotations

import hashlib
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from reflexe_common.db import (
    MigrationChanged,
    MigrationsPending,
    create_pool,
    migrate,
    migrations,
    prepare_schema,
    verify_migrated,
)
from tests.support.schema import own_schema

pytestmark = pytest.mark.integration


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A migrations package of the test's own, on sys.path."""
    name = f"migrations_{uuid.uuid4().hex[:10]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "001_first.sql").write_text("CREATE TABLE first (id int PRIMARY KEY);\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, folder
    sys.modules.pop(name, None)


@pytest.fixture
async def schema_pool(infra):
    async with own_schema(infra.database_url, "migr", min_size=1, max_size=2) as (schema, pool):
        yield schema, pool


async def recorded(pool: asyncpg.Pool) -> dict[str, str | None]:
    return {r["name"]: r["checksum"] for r in await pool.fetch("SELECT name, checksum FROM schema_migrations")}


async def test_applied_migrations_are_recorded_with_their_checksum(package, schema_pool) -> None:
    name, folder = package
    schema, pool = schema_pool
    applied = await migrate(pool, schema, name)
    assert "001_first.sql" in applied and any(a.startswith("platform/") for a in applied)
    rows = await recorded(pool)
    assert rows["001_first.sql"] == hashlib.sha256((folder / "001_first.sql").read_bytes()).hexdigest()
    assert rows == {m.name: m.checksum for m in migrations(name)}
    assert await migrate(pool, schema, name) == [], "a second run applies nothing"
    await verify_migrated(pool, schema, name)


async def test_a_changed_applied_migration_stops_the_job_and_the_service(package, schema_pool) -> None:
    name, folder = package
    schema, pool = schema_pool
    await migrate(pool, schema, name)
    (folder / "001_first.sql").write_text("CREATE TABLE first (id bigint PRIMARY KEY);\n")
    with pytest.raises(MigrationChanged, match="001_first.sql"):
        await migrate(pool, schema, name)
    with pytest.raises(MigrationChanged, match="001_first.sql"):
        await prepare_schema(pool, schema, name, migrate_at_start=False)


async def test_a_service_that_may_not_migrate_waits_for_the_release_job(package, schema_pool) -> None:
    name, folder = package
    schema, pool = schema_pool
    with pytest.raises(MigrationsPending, match="no migrations applied"):
        await prepare_schema(pool, schema, name, migrate_at_start=False)
    await migrate(pool, schema, name)
    (folder / "002_second.sql").write_text("CREATE TABLE second (id int PRIMARY KEY);\n")
    with pytest.raises(MigrationsPending, match="002_second.sql"):
        await prepare_schema(pool, schema, name, migrate_at_start=False)
    assert await pool.fetchval("SELECT to_regclass('second')") is None, "verifying never migrates"
    await prepare_schema(pool, schema, name, migrate_at_start=True)
    await prepare_schema(pool, schema, name, migrate_at_start=False)
    # A later release's migration already applied (rollout): the older code still starts.
    (folder / "002_second.sql").unlink()
    await prepare_schema(pool, schema, name, migrate_at_start=False)


async def test_schemas_migrated_before_checksums_get_them(package, schema_pool) -> None:
    name, _ = package
    schema, pool = schema_pool
    await migrate(pool, schema, name)
    await pool.execute("ALTER TABLE schema_migrations DROP COLUMN checksum")
    await verify_migrated(pool, schema, name)  # the old table: nothing to compare yet
    assert await migrate(pool, schema, name) == []
    assert await recorded(pool) == {m.name: m.checksum for m in migrations(name)}


async def test_an_existing_schema_is_not_created_again(infra) -> None:
    """A role owning only its schema (created by the operator) has no CREATE on the database, and
    PostgreSQL checks that privilege before IF NOT EXISTS: starting must issue no CREATE SCHEMA
    when the schema is there. A read-only session stands for the missing privilege: any DDL fails."""
    schema = f"migr_{uuid.uuid4().hex[:10]}"
    read_only = infra.database_url + ("&" if "?" in infra.database_url else "?") + "default_transaction_read_only=on"
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await create_pool(read_only, schema, min_size=1, max_size=1)  # missing: it must create it
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        pool = await create_pool(read_only, schema, min_size=1, max_size=1)
        await pool.close()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
