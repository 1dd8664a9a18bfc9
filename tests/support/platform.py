"""The whole platform as separate processes on the test infrastructure."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from tests.support.infra import Infra
from tests.support.services import ServiceProcess, service_env

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

