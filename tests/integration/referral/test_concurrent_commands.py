"""Two commands on one referral at once, on the real PostgreSQL store.

Both wait for the referral's row lock, held by a third transaction; once it is released, the second
to get the lock must decide on the referral as the first one left it (its events included), not
as it was when it started waiting. Here both cancel the referral: the second must be refused as
an illegal transition (already cancelled), not fail on the event sequence's primary key.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from reflexe_common.vocabulary import Reason
from reflexe_referral.domain import IllegalTransition
from reflexe_referral.entrypoints.schemas import ReferralIn
from reflexe_referral.service_layer.handlers import ReferralService, SubmitReferral
from tests.support.data import referral_body, unique_finess
from tests.support.schema import own_schema
from tests.support.services import eventually

pytestmark = pytest.mark.integration

WAITING_FOR_THE_ROW = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND cardinality(pg_blocking_pids(pid)) > 0 AND query LIKE 'SELECT %FROM referrals%FOR UPDATE%'")


async def _both_waiting(pool) -> bool:
    # Not on the holder's connection: in a transaction, pg_stat_activity is read once and kept.
    return await pool.fetchval(WAITING_FOR_THE_ROW) == 2


async def test_the_second_of_two_waiting_commands_decides_on_the_first_ones_result(infra):
    async with own_schema(infra.database_url, "concurrent", "reflexe_referral.migrations") as (_, pool):
        service = ReferralService(pool, timedelta(minutes=30))
        now = datetime.now(UTC)
        referral_id = str(uuid.uuid4())
        body = ReferralIn.model_validate(referral_body(unique_finess()))
        await service.submit(SubmitReferral(body.to_domain("", referral_id, now), stamped_by_client=False,
                                            submitted_by=None), now)

        def cancel(referral):
            return referral.cancel(Reason.PATIENT_REFUSED, "the patient changed their mind", datetime.now(UTC))

        async with pool.acquire() as holder, holder.transaction():
            await holder.execute("SELECT 1 FROM referrals WHERE referral_id = $1 FOR UPDATE", uuid.UUID(referral_id))
            commands = [asyncio.create_task(service.act(referral_id, cancel)) for _ in range(2)]
            await eventually(lambda: _both_waiting(pool), what="both commands waiting for the referral's row")
        outcomes = await asyncio.gather(*commands, return_exceptions=True)

        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(refused) == 1, outcomes
        assert isinstance(refused[0], IllegalTransition), refused[0]
        _, events = await service.get(referral_id)
        assert [type(e).__name__ for e in events].count("ReferralCancelled") == 1
