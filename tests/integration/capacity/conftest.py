"""Fixtures of the capacity integration tests."""

from __future__ import annotations

import pytest

from tests.support.schema import own_schema


@pytest.fixture
async def capacity_pool(topics):
    """A pool on a capacity schema of the test's own (the service's migrations applied, dropped after):
    the store's tables hold the test's rows alone."""
    async with own_schema(topics.database_url, "capacity_store", "reflexe_capacity.migrations") as (_, pool):
        yield pool
