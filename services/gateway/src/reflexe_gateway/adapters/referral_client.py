"""The referral service's POST /v1/patient-events, called with the gateway's own access token."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx

TokenSource = Callable[[], Awaitable[str]]


class RetryLater(Exception):
    """The referral service could not be reached or failed: the message stays pending."""


class ClientCredentials:
    """Access tokens of the gateway's confidential client (client-credentials grant), renewed
    before they expire."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, discovery_url: str | None = None) -> None:
        self._discovery = discovery_url or issuer.rstrip("/") + "/.well-known/openid-configuration"
        self._id, self._secret = client_id, client_secret
        self._token, self._expires = "", 0.0

    async def __call__(self) -> str:
        if self._token and time.monotonic() < self._expires - 30:
            return self._token
        async with httpx.AsyncClient(timeout=10) as client:
            discovery = (await client.get(self._discovery)).json()
            answer = await client.post(discovery["token_endpoint"], data={
                "grant_type": "client_credentials", "client_id": self._id, "client_secret": self._secret})
            answer.raise_for_status()
            body = answer.json()
        self._token, self._expires = body["access_token"], time.monotonic() + float(body.get("expires_in", 60))
        return self._token


class ReferralClient:
    def __init__(self, base_url: str, tokens: TokenSource, timeout: float = 10) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._tokens = tokens

    async def report(self, message_key: str, sender_finess: str, effect: str, pseudonym: str,
                     referral_id: str | None, occurred_at: datetime) -> dict:
        try:
            token = await self._tokens()
            answer = await self._client.post("/v1/patient-events", headers={"Authorization": f"Bearer {token}"}, json={
                "message_key": message_key, "sender_finess": sender_finess, "effect": effect, "pseudonym": pseudonym,
                "referral_id": referral_id, "occurred_at": occurred_at.isoformat()})
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise RetryLater(f"referral service unreachable: {type(exc).__name__}") from exc
        if answer.status_code == 200:
            return answer.json()
        if answer.status_code in (401, 403, 429) or answer.status_code >= 500:
            raise RetryLater(f"referral service answered {answer.status_code}")
        # 4xx: the report itself is wrong (a bug of ours): recorded as refused, never retried.
        return {"outcome": "REFUSED", "referral_id": None, "code": f"HTTP_{answer.status_code}"}

    async def close(self) -> None:
        await self._client.aclose()
