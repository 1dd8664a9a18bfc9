"""Limits at the door, as plain ASGI (no task or stream per request): known HTTP methods only,
a bounded request body, a request rate per caller; and bounded pages for every list endpoint.

Order in the stack, outermost first: methods (an unknown method never reaches the metrics,
whose `method` label must stay a fixed set), then metrics, then the body limit and the rate
limit (their 413 and 429 are measured like any answer).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from reflexe_common.errors import ApiError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Operations endpoints: a scraper or a probe must never be refused for going too fast.
RATE_EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class LimitSettings(BaseSettings):
    """Read from the environment when the app is built (each service process has its own)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    request_body_max_bytes: int = Field(256 * 1024, ge=0, validation_alias="REQUEST_BODY_MAX_BYTES")
    # Sustained requests per second per caller, and how many may come at once above it: far
    # above what a hospital, an HAD or a desk page sends, low enough that one caller's runaway
    # loop cannot take a process's whole capacity.
    rate_limit_per_second: float = Field(100.0, gt=0, validation_alias="RATE_LIMIT_PER_SECOND")
    rate_limit_burst: int = Field(200, ge=1, validation_alias="RATE_LIMIT_BURST")


async def send_problem(send, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(ApiError(status, code, message).body()).encode()
    raw_headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class KnownMethodsOnly:
    """501 for a method outside KNOWN_METHODS, before anything records it by name."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] not in KNOWN_METHODS:
            await send_problem(send, 501, "METHOD_NOT_IMPLEMENTED", "this method is not implemented by the platform",
                               {"Allow": ", ".join(sorted(KNOWN_METHODS))})
            return
        await self.app(scope, receive, send)


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once the body passes the limit; Starlette and FastAPI re-raise an
    HTTPException from body parsing instead of turning it into a 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


class BodySizeLimit:
    """Refuses a body above `max_bytes` before it is parsed: at once on its Content-Length, or
    while it arrives (chunked bodies, forms, a lying Content-Length)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        exceeded = False
        started = False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def guarded_send(message) -> None:
            nonlocal started
            if exceeded:
                # Whatever the app made of the interrupted body (a 400 from a parser that wraps
                # every error), the answer is 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        # No "Connection: close": the server would close with the body still arriving and the
        # client would see a reset instead of the 413; kept alive, it discards the rest unparsed.
        await send_problem(send, 413, "REQUEST_TOO_LARGE", f"the request body is larger than {self.max_bytes} bytes")


class TokenBuckets:
    """One token bucket per key, in this process's memory: `rate` tokens per second up to
    `burst`. A full bucket carries no information, so full buckets are forgotten when the table
    grows (memory stays bounded by the callers active in the last burst/rate seconds)."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic, max_keys: int = 50_000) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """0 when the request may go; otherwise the seconds until one token is back."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_keys:
                self._forget_full(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        self._buckets = {k: (t, at) for k, (t, at) in self._buckets.items()
                         if t + (now - at) * self.rate < self.burst}

    def __len__(self) -> int:
        return len(self._buckets)


# The token the rate limit verified for this request, and its principal. A context variable is
# per request: uvicorn runs each request in its own task, which the middleware and the
# endpoint's dependencies share.
_verified_in_this_request: ContextVar[tuple[str, Any] | None] = ContextVar("verified_in_this_request", default=None)


class VerifiedOnce:
    """Wraps the app's token verifier so that the endpoint's authentication reuses what the rate
    limit verified moments before in the same request, instead of checking the signature twice."""

    def __init__(self, verifier) -> None:
        self.inner = verifier

    async def verify(self, token: str):
        verified = _verified_in_this_request.get()
        if verified is not None and verified[0] == token:
            return verified[1]
        return await self.inner.verify(token)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class RateLimit:
    """429 with Retry-After once a caller exceeds its bucket. The caller is the verified token's
    subject (an unverified `sub` would let anyone drain someone else's bucket), else the client
    address (no token, or a token that does not verify)."""

    def __init__(self, app, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in RATE_EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(await self._caller(scope))
        if wait > 0:
            await send_problem(send, 429, "TOO_MANY_REQUESTS", "too many requests from this caller; retry later",
                               {"Retry-After": str(max(1, math.ceil(wait)))})
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _caller(scope) -> str:
        authorization = Headers(scope=scope).get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        verifier = getattr(getattr(scope.get("app"), "state", None), "verifier", None)
        if scheme.lower() == "bearer" and credentials and verifier is not None:
            try:
                token = credentials.strip()
                principal = await verifier.verify(token)
                _verified_in_this_request.set((token, principal))
                return f"sub:{principal.subject}"
            except Exception:  # an invalid token is limited by address; the endpoint answers 401
                pass
        client = scope.get("client")
        return f"addr:{client[0] if client else 'unknown'}"


def install_limits(app, settings: LimitSettings | None = None) -> LimitSettings:
    """Adds the body and rate limits (inside the metrics) — call before adding RequestMetrics;
    `KnownMethodsOnly` goes outside it (see create_app)."""
    settings = settings or LimitSettings()
    if getattr(app.state, "verifier", None) is not None and not isinstance(app.state.verifier, VerifiedOnce):
        app.state.verifier = VerifiedOnce(app.state.verifier)
    app.add_middleware(RateLimit, buckets=TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst))
    app.add_middleware(BodySizeLimit, max_bytes=settings.request_body_max_bytes)
    app.state.limits = settings
    return settings


# --- pagination -------------------------------------------------------------------------------

MAX_PAGE_SIZE = 200
MAX_OFFSET = 100_000  # deeper than any real list; an OFFSET scan beyond it is only load


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int

    def of(self, rows: list[Any]) -> tuple[list[Any], int | None]:
        """Rows fetched with `fetch_limit` cut to the page, and the offset of the next page (None: last)."""
        more = len(rows) > self.limit
        return rows[: self.limit], (self.offset + self.limit if more else None)

    @property
    def fetch_limit(self) -> int:
        """One row more than the page, to know whether another page follows."""
        return self.limit + 1


def pagination(default_limit: int = 50):
    """A FastAPI dependency: `limit` and `offset` query parameters, bounded (422 naming the field)."""

    def page(limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"page size, 1 to {MAX_PAGE_SIZE}")] = default_limit,
             offset: Annotated[int, Query(ge=0, le=MAX_OFFSET,
                                          description="rows to skip: the `next_offset` of the previous page")] = 0) -> Page:
        return Page(limit, offset)

    return page
