"""The gateway and the referral service in-process on the real PostgreSQL (and the broker the
referral service needs), with a hospital and an HAD on the gateway's allow-list."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import pytest

from reflexe_gateway.domain.pseudonym import pseudonymise
from reflexe_gateway.entrypoints.app import build_app as build_gateway
from reflexe_gateway.entrypoints.mllp import END, frame
from reflexe_gateway.settings import GatewaySettings
from reflexe_referral.entrypoints.app import build_app as build_referral
from reflexe_referral.settings import ReferralSettings
from tests.support.data import unique_finess
from tests.support.issuer import suite_issuer
from tests.support.platform import in_process_env
from tests.support.services import bearer, serve_in_process
from tests.unit.gateway.hl7_samples import AUTHORITY_OID

PSEUDONYM_KEY = "gateway test key: never in a log"


@dataclass
class GatewayUnderTest:
    referral_url: str
    http_url: str
    mllp_port: int
    hospital: str
    had: str
    app: object

    def pseudonym(self, patient_id: str) -> str:
        return pseudonymise(PSEUDONYM_KEY.encode(), patient_id, AUTHORITY_OID)


class MllpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, message: str | bytes) -> str:
        payload = message.encode("latin-1") if isinstance(message, str) else message
        self.writer.write(frame(payload))
        await self.writer.drain()
        return await self.ack()

    async def ack(self) -> str:
        raw = await asyncio.wait_for(self.reader.readuntil(END), 30)
        assert raw.startswith(b"\x0b")
        return raw[1:-2].decode("latin-1")

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def mllp(port: int) -> MllpClient:
    return MllpClient(*await asyncio.open_connection("127.0.0.1", port))


def msa(ack: str) -> list[str]:
    line = next(s for s in ack.split("\r") if s.startswith("MSA|"))
    return line.split("|")


@pytest.fixture(scope="module")
async def gateway(topics):
    hospital, had = unique_finess(), unique_finess()
    referral_settings = ReferralSettings(**in_process_env(topics))
    async with serve_in_process(build_referral(referral_settings)) as referral_url:
        settings = GatewaySettings(
            DATABASE_URL=topics.database_url, OIDC_ISSUER=suite_issuer().url, LOG_LEVEL="INFO",
            GATEWAY_PSEUDONYM_KEY=PSEUDONYM_KEY, GATEWAY_MLLP_PORT=0, GATEWAY_REFERRAL_URL=referral_url,
            GATEWAY_APPLY_POLL_SECONDS=0.05,
            GATEWAY_SENDERS={hospital: {"kind": "hospital", "networks": ["127.0.0.1/32"]},
                             had: {"kind": "had", "networks": ["127.0.0.1/32"]}})

        async def tokens() -> str:
            return bearer("gateway")

        app = build_gateway(settings, tokens=tokens)
        async with serve_in_process(app) as http_url:
            yield GatewayUnderTest(referral_url, http_url, app.state.mllp_port, hospital, had, app)


@pytest.fixture
async def referral(gateway):
    async with httpx.AsyncClient(base_url=gateway.referral_url, timeout=30) as client:
        yield client


@pytest.fixture
async def http(gateway):
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=30) as client:
        yield client
