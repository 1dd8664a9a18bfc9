"""The notify consumer's batches on a real PostgreSQL: events of one batch see what the earlier
ones recorded (a referral's source hospital, the HADs it concerns, the departments its search
was widened to), exactly as if handled one by one, and a batch handled again changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from reflexe.v1 import referral_pb2

from reflexe_common.db import create_pool, prepare_schema
from reflexe_common.envelope import Envelope, wrap
from reflexe_common.webhook_secrets import generate_secret
from reflexe_notify.adapters import store
from reflexe_notify.adapters.secret_box import SecretBox
from reflexe_notify.domain.recipients import Recipient
from reflexe_notify.service_layer.notifications import batch_handler
from tests.integration.notify.kit import AT, header, referral_requested
from tests.support.data import unique_finess
from tests.support.infra import Infra
from tests.support.services import NOTIFY_TEST_KEY
from tests.support.territory import own_department

pytestmark = pytest.mark.integration
ATTEMPTS = 4
NOWHERE = "http://127.0.0.1:9/hooks"  # nothing dispatches in this module; the subscriptions end with it


@pytest.fixture(scope="module")
async def pool(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(infra.database_url, "notify", max_size=2)
    await prepare_schema(p, "notify", "reflexe_notify.migrations", True)
    yield p
    await p.close()


def referral_story(department: str, neighbour: str | None, hospital: str, had: str) -> list[Envelope]:
    """A referral requested, offered to an HAD, widened to a neighbour (if any) and cancelled."""
    referral_id = str(uuid.uuid4())
    offer = referral_pb2.OfferMade(header=header(referral_id, department), offer_id=str(uuid.uuid4()), had_finess=had,
                                   explanation="HAD la plus proche", by_desk=False)
    offer.hold_until.FromDatetime(AT)
    return [wrap(m, "tests") for m in (
        referral_requested(department, hospital, referral_id),
        offer,
        *([referral_pb2.SearchWidened(header=header(referral_id, department), departments=[neighbour])]
          if neighbour else []),
        referral_pb2.ReferralCancelled(header=header(referral_id, department), reason="PATIENT_DECEASED"),
    )]


async def told(pool: asyncpg.Pool, department: str, neighbour: str, hospital: str, had: str) -> dict[str, Any]:
    """Who was told what: deliveries by recipient, and each stream's entries with their numbers."""
    recipients = [str(Recipient.desk(department)), str(Recipient.hospital(hospital)), str(Recipient.had(had))]
    rows = await pool.fetch("SELECT recipient, event_type FROM deliveries WHERE recipient = ANY($1) "
                            "ORDER BY recipient, event_type", recipients)
    streams = {}
    for key, name in ((department, "desk"), (neighbour, "neighbour"), (f"had:{had}", "had")):
        entries = await pool.fetch("SELECT seq, type FROM desk_events WHERE department = $1 ORDER BY seq", key)
        streams[name] = [e["type"] for e in entries]
        seqs = [e["seq"] for e in entries]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, f"{name}: numbers with a gap"
    deliveries = {}
    for row in rows:
        kind = row["recipient"].split(":")[0]
        deliveries.setdefault(kind, []).append(row["event_type"])
    return {"deliveries": deliveries, "streams": streams}


async def subscribe_all(pool: asyncpg.Pool, department: str, hospital: str, had: str) -> list[uuid.UUID]:
    ids = []
    for recipient in (Recipient.desk(department), Recipient.hospital(hospital), Recipient.had(had)):
        # Sealed with the suite's key, as the service seals: a key rotation run later must open it.
        sealed = SecretBox([NOTIFY_TEST_KEY]).seal(generate_secret())
        row = await store.create_subscription(pool, str(recipient), NOWHERE, [], sealed, "tests")
        ids.append(row["id"])
    return ids


async def test_a_batch_tells_the_same_people_as_its_events_one_by_one(pool: asyncpg.Pool) -> None:
    record = batch_handler(ATTEMPTS)
    outcomes = []
    subscriptions: list[uuid.UUID] = []
    try:
        for batched in (True, False):
            department, neighbour, hospital, had = own_department(), own_department(), unique_finess(), unique_finess()
            subscriptions += await subscribe_all(pool, department, hospital, had)
            story = referral_story(department, neighbour, hospital, had)
            async with pool.acquire() as conn:
                for batch in ([story] if batched else [[e] for e in story]):
                    async with conn.transaction():
                        await record(conn, batch)
            outcomes.append(await told(pool, department, neighbour, hospital, had))
    finally:
        for subscription in subscriptions:
            await store.delete_subscription(pool, subscription)
    batched, one_by_one = outcomes
    assert batched == one_by_one
    # What only earlier events of the batch could tell: the source hospital, the HAD concerned,
    # the neighbour the search was widened to.
    assert batched["deliveries"]["hospital"] == ["referral.cancelled"]
    assert batched["deliveries"]["had"] == ["referral.cancelled"]
    assert batched["streams"]["neighbour"] == ["referral.widened", "referral.cancelled"]
    assert batched["streams"]["had"] == ["offer.proposed", "referral.cancelled"]
    assert batched["streams"]["desk"] == ["referral.requested", "offer.proposed", "referral.widened",
                                          "referral.cancelled"]


async def test_a_batch_handled_again_changes_nothing(pool: asyncpg.Pool) -> None:
    # No widening here: handled again, a referral's earlier events would reach the desks it was
    # widened to since (the inbox never lets that happen).
    record = batch_handler(ATTEMPTS)
    department, neighbour, hospital, had = own_department(), own_department(), unique_finess(), unique_finess()
    subscriptions = await subscribe_all(pool, department, hospital, had)
    try:
        story = referral_story(department, None, hospital, had)
        streams = [department, f"had:{had}"]

        async def heads() -> dict[str, int]:
            rows = await pool.fetch("SELECT department, last_seq FROM desk_stream_heads WHERE department = ANY($1)",
                                    streams)
            return {r["department"]: r["last_seq"] for r in rows}

        async with pool.acquire() as conn:
            async with conn.transaction():
                first = await record(conn, story)
            before, heads_before = await told(pool, department, neighbour, hospital, had), await heads()
            async with conn.transaction():
                again = await record(conn, story)  # as if the inbox had been bypassed
        assert sorted(e.stream for e in first) == sorted([department] * 3 + [f"had:{had}"] * 2)
        assert {e.stream: e.seq for e in first} == heads_before  # each stream's last entry is its head
        assert again == []
        assert await told(pool, department, neighbour, hospital, had) == before
        assert await heads() == heads_before  # no number taken for nothing: no gap for the readers
    finally:
        for subscription in subscriptions:
            await store.delete_subscription(pool, subscription)
