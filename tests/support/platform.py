"""The platform for tests: the whole platform as separate processes on the test infrastructure, or
the referral and capacity services served in process; and the HADs and referrals a test makes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from reflexe_capacity.entrypoints.app import build_app as build_capacity
from reflexe_capacity.settings import CapacitySettings
from reflexe_referral.entrypoints.app import build_app as build_referral
from reflexe_referral.settings import ReferralSettings
from tests.support.data import MONTPELLIER, had_body, referral_body, unique_finess
from tests.support.infra import Infra
from tests.support.issuer import suite_issuer
from tests.support.kafka import matching_starts_from_now
from tests.support.services import ServiceProcess, serve_in_process, service_env, token

SERVICES = {"referral": "REFERRAL_HTTP_PORT", "capacity": "CAPACITY_HTTP_PORT",
            "indicators": "INDICATORS_HTTP_PORT", "notify": "NOTIFY_HTTP_PORT"}


@asynccontextmanager
async def running_platform(infra: Infra, log_dir: Path, gateway_env: dict[str, str] | None = None,
                           **env: str) -> AsyncIterator[dict[str, ServiceProcess]]:
    """The four services, and the HL7 gateway too when given its settings (GATEWAY_*: pseudonym
    key, MLLP port, allow-list, client secret); it reports to this platform's referral service."""
    processes = {name: ServiceProcess(f"reflexe_{name}", service_env(infra, **env), port_env, log_dir)
                 for name, port_env in SERVICES.items()}
    # The desk page (in notify) reads and acts through the referral and capacity services.
    processes["notify"].env.update(NOTIFY_REFERRAL_URL=processes["referral"].url,
                                   NOTIFY_CAPACITY_URL=processes["capacity"].url)
    if gateway_env is not None:
        processes["gateway"] = ServiceProcess("reflexe_gateway", service_env(infra, **env, **gateway_env),
                                              "GATEWAY_HTTP_PORT", log_dir)
        processes["gateway"].env["GATEWAY_REFERRAL_URL"] = processes["referral"].url
    try:
        for process in processes.values():
            process.start()
        for process in processes.values():
            await process.wait_ready()
        yield processes
    finally:
        for process in processes.values():
            process.stop()


def in_process_env(infra: Infra, **overrides: Any) -> dict[str, Any]:
    """The settings of a service served in process: the session's broker and database, the suite's
    token issuer, warnings only."""
    return {"KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "DATABASE_URL": infra.database_url,
            "OIDC_ISSUER": suite_issuer().url, "LOG_LEVEL": "WARNING", **overrides}


@dataclass(frozen=True)
class InProcessPlatform:
    referral_url: str
    capacity_url: str
    referral: httpx.AsyncClient
    capacity: httpx.AsyncClient
    database: asyncpg.Connection  # the tables as they are, for what the API does not show

    async def close_hads_serving(self, communes: list[str]) -> None:
        """HADs an earlier run left serving these communes (a reused database) declare themselves
        closed, so that this run's HADs are the only candidates there."""
        for row in await self.database.fetch("SELECT finess FROM capacity.hads WHERE zone_communes && $1",
                                             list(communes)):
            closed = await self.capacity.post(
                f"/v1/hads/{row['finess']}/capacity", headers=token("had", finess=row["finess"]),
                json={"places_available": 0, "admissions_possible_today": 0, "status": "CLOSED"})
            assert closed.status_code in (200, 201), closed.text


@asynccontextmanager
async def referral_and_capacity_in_process(infra: Infra) -> AsyncIterator[InProcessPlatform]:
    """The referral and capacity services (the matcher included) served in process, starting with
    what is posted and decided from now on (matching_starts_from_now), a client of each and a
    connection to the database."""
    env = in_process_env(infra)
    await matching_starts_from_now(infra)
    # Generous timeouts: two shared cores, and the services share this process with the test.
    async with serve_in_process(build_referral(ReferralSettings(**env))) as referral_url, \
            serve_in_process(build_capacity(CapacitySettings(**env))) as capacity_url, \
            httpx.AsyncClient(base_url=referral_url, timeout=30) as referral, \
            httpx.AsyncClient(base_url=capacity_url, timeout=30) as capacity:
        database = await asyncpg.connect(infra.database_url)
        try:
            yield InProcessPlatform(referral_url, capacity_url, referral, capacity, database)
        finally:
            await database.close()


async def register_had(capacity: httpx.AsyncClient, communes: list[str], *, places: int = 3, department: str = "34",
                       finess: str | None = None, name: str | None = None, **overrides: Any) -> str:
    """A new HAD of `department` (a new FINESS unless given) serving `communes`, open with `places`
    places (as many admissions today), registered by an administrator and declared by the HAD
    itself: its FINESS."""
    finess = finess or unique_finess(department)
    registered = await capacity.put(f"/v1/hads/{finess}", headers=token("admin"),
                                    json=had_body(name or f"HAD {finess}", communes, department, **overrides))
    assert registered.status_code == 200, registered.text
    connect = registered.json()["connect"]  # how the HAD's own system will connect, said at registration
    assert connect["oidc_issuer"] == suite_issuer().url and connect["kafka_inbound_topic"].endswith(finess)
    declared = await capacity.post(f"/v1/hads/{finess}/capacity", headers=token("had", finess=finess),
                                   json={"places_available": places, "admissions_possible_today": places,
                                         "status": "OPEN"})
    assert declared.status_code == 201, declared.text
    return finess


async def post_referral(referral: httpx.AsyncClient, commune: str = MONTPELLIER, **overrides: Any) -> str:
    """A referral for a patient cared for in `commune`, posted by a new hospital: its id."""
    hospital = unique_finess()
    response = await referral.post("/v1/referrals", json=referral_body(hospital, commune, **overrides),
                                   headers=token("hospital", finess=hospital))
    assert response.status_code == 201, response.text
    return response.json()["referral_id"]
