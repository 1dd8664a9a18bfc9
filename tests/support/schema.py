"""A PostgreSQL schema of a test's own: its tables start empty whatever ran before, and go after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from reflexe_common.db import create_pool, migrate


@asynccontextmanager
async def own_schema(database_url: str, prefix: str, *migrations: str, min_size: int = 2,
                     max_size: int = 10) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A new schema named `prefix_<random>` with the tables of `migrations` (packages of migrations,
    in order), and a pool whose connections work in it; dropped with everything in it at the end."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    pool = await create_pool(database_url, schema, min_size=min_size, max_size=max_size)
    try:
        for package in migrations:
            await migrate(pool, schema, package)
        yield schema, pool
    finally:
        await pool.close()
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
