"""An HAD serving two departments: its capacity events name both, so that each desk hears of them
(notify tells every department listed; the record stays keyed by the first). Runs the Matcher on a
fresh PostgreSQL schema and reads what it put in its outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from reflexe_capacity.adapters.store import CapacityStore
from reflexe_capacity.domain.capacity import CapacityDeclaration
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_capacity.service_layer.matcher import Matcher, MatcherPolicy
from reflexe_capacity.service_layer.unit_of_work import PostgresUnitOfWork
from reflexe_common.envelope import message_class
from reflexe_common.vocabulary import CapacityStatus, Equipment

pytestmark = pytest.mark.integration
HAD = "310781406"


async def test_a_two_department_hads_capacity_events_name_both_departments(capacity_pool):
    matcher = Matcher(MatcherPolicy())
    had = HadEstablishment(HAD, "HAD Garonne-Tarn", frozenset({"81", "31"}), frozenset(), frozenset({"03"}),
                           frozenset({Equipment.OXYGEN}), frozenset({"31555", "81004"}), authorised_places=20)
    async with capacity_pool.acquire() as conn, conn.transaction():
        await CapacityStore(conn).upsert_had(had)
    async with capacity_pool.acquire() as conn, conn.transaction():
        declaration = CapacityDeclaration(HAD, 4, 2, CapacityStatus.OPEN, datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
        assert await matcher.declare(PostgresUnitOfWork(conn), declaration, "test")
    async with capacity_pool.acquire() as conn:
        rows = await conn.fetch("SELECT key, headers, payload FROM outbox ORDER BY id")
    published = [(r["key"], message_class(dict(json.loads(r["headers"]))["ce_type"]).FromString(r["payload"]))
                 for r in rows]
    kinds = [type(m).__name__ for _, m in published]
    assert kinds == ["CapacityDeclared", "LivePlacesChanged"]
    for key, message in published:
        assert key == "31" and message.department == "31"
        assert list(message.departments) == ["31", "81"]
