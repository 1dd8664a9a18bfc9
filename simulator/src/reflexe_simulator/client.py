"""Calls to the platform's public HTTP APIs, each with the token of the role playing it.

Never raises for an HTTP outcome: every call returns a :class:`Result`. Connection errors,
timeouts, 429 and 5xx are retried with exponential backoff, with the very same body bytes (a
POST whose first answer was lost is then answered 200 as a replay); 409 (a race lost: offer
expired, already decided...) is expected and counted, not retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from reflexe_simulator import fhir


log = logging.getLogger("reflexe_simulator.client")


@dataclass(frozen=True)
class Result:
    status: int  # 0 when the service could not be reached
    data: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def code(self) -> str:
        """The platform's error code (``{"error": {"code": ...}}`` or ``{"code": ...}``), if any."""
        if isinstance(self.data, dict):
            if self.data.get("resourceType") == "OperationOutcome":
                # The FHIR API names the platform's code first in each issue: "NO_CURRENT_OFFER: ...".
                issues = self.data.get("issue") or [{}]
                code, _, _ = str(issues[0].get("diagnostics", "")).partition(":")
                return code if code.replace("_", "").isalpha() and code.isupper() else ""
            err = self.data.get("error")
            if isinstance(err, dict):
                return str(err.get("code", ""))
            return str(self.data.get("code", ""))
        return ""


class TokenSource(Protocol):
    """Where the simulator's actors get their access tokens (the local identity provider)."""

    async def fetch(self, role: str, *, finess: str | None = None, department: str | None = None) -> tuple[str, float]:
        """An access token for this role and scope, and when it expires (epoch seconds)."""
        ...


FORGET_TOKENS_AFTER_SECONDS = 600.0


class Tokens:
    """Caches an access token per (role, scope) and fetches a new one shortly before it expires."""

    def __init__(self, source: TokenSource, renew_before_seconds: float = 60.0) -> None:
        self.source = source
        self.renew_before = renew_before_seconds
        self._cache: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        # token → its actor and expiry, to renew a refused one; forgotten a while after it expired
        self._keys: dict[str, tuple[tuple[str, str, str], float]] = {}

    async def get(self, role: str, *, finess: str | None = None, department: str | None = None) -> str:
        return await self._get((role, finess or "-", department or "-"))

    async def renewed(self, refused: str) -> str | None:
        """A fresh token for the actor whose token the platform refused (expired while its request
        waited and was retried); None for a token not issued here."""
        known = self._keys.get(refused)
        return None if known is None else await self._get(known[0], refused=refused)

    async def _get(self, key: tuple[str, str, str], refused: str | None = None) -> str:
        # One fetch per actor at a time: concurrent callers wait for it instead of each asking the
        # identity provider (and each creating the same client or user).
        async with self._locks.setdefault(key, asyncio.Lock()):
            token, expires = self._cache.get(key, ("", 0.0))
            if token == refused or time.time() > expires - self.renew_before:
                role, finess, department = key
                token, expires = await self.source.fetch(role, finess=None if finess == "-" else finess,
                                                         department=None if department == "-" else department)
                self._cache[key] = (token, expires)
                # A request retried for minutes may still come back with a token expired since.
                forgotten = time.time() - FORGET_TOKENS_AFTER_SECONDS
                self._keys = {t: known for t, known in self._keys.items() if known[1] > forgotten}
                self._keys[token] = (key, expires)
        return token


class PlatformClient:
    def __init__(self, referral_url: str, capacity_url: str, notify_url: str, tokens: TokenSource, counters: Any = None,
                 attempts: int = 5, backoff: float = 0.5, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None, fhir_url: str | None = None) -> None:
        self.urls = {"referral": referral_url.rstrip("/"), "capacity": capacity_url.rstrip("/"),
                     "notify": notify_url.rstrip("/"), "fhir": (fhir_url or f"{referral_url.rstrip('/')}/fhir").rstrip("/")}
        self.tokens = Tokens(tokens)
        self.counters = counters
        self.attempts = attempts
        self.backoff = backoff
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._down: dict[str, bool] = {}

    async def aclose(self) -> None:
        await self._http.aclose()
        close_source = getattr(self.tokens.source, "aclose", None)
        if close_source:
            await close_source()

    def _count(self, name: str) -> None:
        if self.counters is not None:
            self.counters.inc(name)

    async def call(self, service: str, method: str, path: str, token: str, body: Any = None,
                   attempts: int | None = None, headers: dict[str, str] | None = None,
                   content_type: str = "application/json", expected: tuple[int, ...] = ()) -> Result:
        """``expected``: statuses the caller handles itself (neither counted as errors nor logged)."""
        url = self.urls[service] + path
        delay = self.backoff
        attempts = attempts or self.attempts
        last = Result(0, error="not attempted")
        renewed = False
        # Serialised once: a retry (its first attempt's answer lost or late) sends the very same
        # bytes, which the platform answers as a replay (200), not as a conflicting duplicate.
        headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        content = None
        if body is not None:
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        for attempt in range(1, attempts + 1):
            try:
                response = await self._http.request(method, url, content=content, headers=headers)
            except (httpx.TransportError, OSError) as exc:
                last = Result(0, error=f"{type(exc).__name__}: {exc}".strip())
                if not self._down.get(service):
                    log.error("%s service unreachable at %s (%s); retrying with backoff", service, self.urls[service], last.error)
                self._down[service] = True
            else:
                try:
                    data = response.json()
                except ValueError:
                    data = response.text
                last = Result(response.status_code, data)
                if self._down.pop(service, False):
                    log.info("%s service reachable again at %s", service, self.urls[service])
                if response.status_code == 401 and not renewed and (fresh := await self.tokens.renewed(token)):
                    # The token expired while the request waited for a connection and was retried.
                    token, renewed = fresh, True
                    headers["Authorization"] = f"Bearer {token}"
                    continue
                if response.status_code < 500 and response.status_code != 429:
                    break
                last = Result(response.status_code, data, f"HTTP {response.status_code}")
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        if last.status == 0:
            self._count("unreachable")
        elif last.conflict:
            self._count("http_409")
        elif not last.ok and last.status not in expected:
            self._count("http_errors")
            log.warning("%s %s %s -> %s %s", service, method, path, last.status, _short(last.data))
        return last

    # -- referral service ----------------------------------------------------------------

    async def post_referral(self, source_finess: str, body: dict[str, Any]) -> Result:
        return await self.call("referral", "POST", "/v1/referrals", await self.tokens.get("hospital", finess=source_finess), body)

    async def accept(self, had: str, referral_id: str, offer_id: str) -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/offers/{offer_id}/accept",
                               await self.tokens.get("had", finess=had))

    async def accept_pending_evaluation(self, had: str, referral_id: str, offer_id: str) -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/offers/{offer_id}/accept-pending-evaluation",
                               await self.tokens.get("had", finess=had))

    async def confirm_evaluation(self, had: str, referral_id: str) -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/evaluation/confirm",
                               await self.tokens.get("had", finess=had))

    async def withdraw_acceptance(self, had: str, referral_id: str, reason: str, text: str = "") -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/evaluation/withdraw",
                               await self.tokens.get("had", finess=had), {"reason": reason, "text": text})

    async def give_avis(self, had: str, department: str, referral_id: str, eligible: bool, reason: str | None = None,
                        text: str = "") -> Result:
        """The avis HAD of a liaison nurse of this HAD, working in this department."""
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/avis",
                               await self.tokens.get("liaison", finess=had, department=department),
                               {"eligible": eligible, "reason": reason, "text": text})

    async def decline(self, had: str, referral_id: str, offer_id: str, reason: str, text: str = "") -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/offers/{offer_id}/decline",
                               await self.tokens.get("had", finess=had), {"reason": reason, "text": text})

    async def admit(self, had: str, referral_id: str) -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/admission", await self.tokens.get("had", finess=had))

    async def discharge(self, had: str, referral_id: str) -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/discharge", await self.tokens.get("had", finess=had))

    async def cancel(self, source_finess: str, referral_id: str, reason: str, text: str = "") -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/cancel",
                               await self.tokens.get("hospital", finess=source_finess), {"reason": reason, "text": text})

    async def update_conditions(self, source_finess: str, referral_id: str, conditions: dict[str, bool]) -> Result:
        """The hospital updates its request's conditions on the version it has just read (If-Match); a
        version gone stale meanwhile (an offer, a clock) is read again, once."""
        token = await self.tokens.get("hospital", finess=source_finess)
        path = f"/v1/referrals/{referral_id}"
        result = Result(0, error="not attempted")
        for _ in range(2):
            read = await self.call("referral", "GET", path, token)
            if not read.ok or not isinstance(read.data, dict):
                return read
            result = await self.call("referral", "PATCH", path + "/request", token, {"conditions": conditions},
                                     headers={"If-Match": f'"{read.data.get("version")}"'}, expected=(412,))
            if result.status != 412:
                return result
        self._count("http_errors")  # stale twice: counted once, as the call's failure
        log.warning("referral PATCH %s/request -> 412 twice %s", path, _short(result.data))
        return result

    async def get_referral_as_desk(self, department: str, referral_id: str) -> Result:
        return await self.call("referral", "GET", f"/v1/referrals/{referral_id}", await self.tokens.get("desk", department=department))

    async def desk_offer(self, department: str, referral_id: str, had_finess: str) -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/desk/offer",
                               await self.tokens.get("desk", department=department), {"had_finess": had_finess})

    async def desk_widen(self, department: str, referral_id: str, departments: list[str]) -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/desk/widen",
                               await self.tokens.get("desk", department=department), {"departments": departments})

    async def desk_close(self, department: str, referral_id: str, reason: str, text: str) -> Result:
        return await self.call("referral", "POST", f"/v1/referrals/{referral_id}/desk/close",
                               await self.tokens.get("desk", department=department), {"reason": reason, "text": text})

    async def open_referrals(self, department: str) -> Result:
        return await self.call("referral", "GET", f"/v1/departments/{department}/referrals",
                               await self.tokens.get("desk", department=department))

    # -- FHIR API of the referral service (docs/integration-fhir.md) ----------------------

    async def fhir_create_service_request(self, source_finess: str, resource: dict[str, Any], referral_id: str) -> Result:
        """Conditional create: 201 new, 200 the same again (a retry whose answer was lost)."""
        return await self.call("fhir", "POST", "/ServiceRequest", await self.tokens.get("hospital", finess=source_finess),
                               resource, headers={"If-None-Exist": fhir.if_none_exist(referral_id), "Accept": fhir.FHIR_JSON},
                               content_type=fhir.FHIR_JSON)

    async def fhir_read_task(self, had: str, referral_id: str) -> Result:
        return await self.call("fhir", "GET", f"/Task/{referral_id}", await self.tokens.get("had", finess=had),
                               headers={"Accept": fhir.FHIR_JSON})

    async def fhir_update_task(self, had: str, referral_id: str, resource: dict[str, Any]) -> Result:
        return await self.call("fhir", "PUT", f"/Task/{referral_id}", await self.tokens.get("had", finess=had), resource,
                               headers={"Accept": fhir.FHIR_JSON}, content_type=fhir.FHIR_JSON)

    # -- capacity service ----------------------------------------------------------------

    async def register_had(self, finess: str, body: dict[str, Any]) -> Result:
        return await self.call("capacity", "PUT", f"/v1/hads/{finess}", await self.tokens.get("admin"), body)

    async def declare(self, finess: str, body: dict[str, Any]) -> Result:
        return await self.call("capacity", "POST", f"/v1/hads/{finess}/capacity", await self.tokens.get("had", finess=finess), body)

    async def capacity_board(self, department: str) -> Result:
        return await self.call("capacity", "GET", f"/v1/departments/{department}/capacity",
                               await self.tokens.get("desk", department=department))

    # -- notify service ------------------------------------------------------------------

    async def subscribe(self, token: str, url: str, secret: str, event_types: list[str] | None = None) -> Result:
        return await self.call("notify", "POST", "/v1/subscriptions", token,
                               {"url": url, "event_types": event_types or [], "secret": secret}, attempts=1)


def _short(data: Any, limit: int = 300) -> str:
    text = str(data)
    return text if len(text) <= limit else text[:limit] + "…"
