"""Killing the referral service with SIGKILL right after a POST returned 201 loses nothing:
after a restart the referral's event is published exactly once."""

from __future__ import annotations

import httpx
import pytest

from reflexe_common.topics import REFERRAL_EVENTS
from tests.support.data import referral_body, unique_finess
from tests.support.kafka import read_all
from tests.support.services import REPO_ROOT, ServiceProcess, eventually, service_env, token

pytestmark = pytest.mark.integration


async def test_sigkill_right_after_201_publishes_each_referral_exactly_once(topics, tmp_path):
    env = service_env(topics)
    hospital = unique_finess()
    posted: list[str] = []
    for _ in range(3):  # three crashes, each right after an answered POST
        service = ServiceProcess("reflexe_referral", env, "REFERRAL_HTTP_PORT", tmp_path).start()
        await service.wait_ready()
        async with httpx.AsyncClient(base_url=service.url) as client:
            body = referral_body(hospital)
            response = await client.post("/v1/referrals", json=body, headers=token("hospital", finess=hospital))
        assert response.status_code == 201
        service.kill()
        posted.append(body["referral_id"])

    restarted = ServiceProcess("reflexe_referral", env, "REFERRAL_HTTP_PORT", tmp_path).start()
    try:
        await restarted.wait_ready()

        async def all_published():
            found = await read_all(topics, REFERRAL_EVENTS.name,
                                   lambda e: e.type == "reflexe.v1.ReferralRequested" and e.message.header.referral_id in posted)
            return found if {e.message.header.referral_id for e in found} == set(posted) else None

        published = await eventually(all_published, timeout=60, interval=0.5, what="every accepted referral published")
        assert sorted(e.message.header.referral_id for e in published) == sorted(posted), "exactly once each"
        async with httpx.AsyncClient(base_url=restarted.url) as client:
            for referral_id in posted:
                state = await client.get(f"/v1/referrals/{referral_id}", headers=token("hospital", finess=hospital))
                assert state.status_code == 200
    finally:
        # uvicorn re-raises SIGTERM once its graceful shutdown is done; -9 would mean it hung.
        assert restarted.stop() in (0, -15), "graceful shutdown on SIGTERM"
