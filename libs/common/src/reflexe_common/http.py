"""The HTTP shell every service shares: health, readiness, metrics, errors, request metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from reflexe_common.audit import record_refusal
from reflexe_common.auth import AuthSettings, TokenVerifier
from reflexe_common.errors import ApiError
from reflexe_common.limits import KNOWN_METHODS, KnownMethodsOnly, install_limits
from reflexe_common.metrics import HTTP_SECONDS
from reflexe_common.openapi import document_problems

log = logging.getLogger(__name__)
ReadinessCheck = Callable[[], Awaitable[None]]


class RequestMetrics:
    """Request latency by route template (never a concrete id), as plain ASGI: the decorator
    style (BaseHTTPMiddleware) costs a task and a stream per request."""

    def __init__(self, app, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            # A label from a fixed set: KnownMethodsOnly answers other methods before this runs.
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
            HTTP_SECONDS.labels(self.service, method, route, f"{status // 100}xx").observe(
                time.perf_counter() - started)
PROBLEM_JSON = "application/problem+json"


def create_app(service: str, settings, lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
               description: str = "") -> FastAPI:
    """settings: the service's settings (ServiceSettings); its OIDC fields say whose tokens to trust."""
    app = FastAPI(title=f"Réflexe {service}", description=description, lifespan=lifespan)
    app.state.verifier = TokenVerifier(AuthSettings.of(settings))
    app.state.readiness_checks = {}
    app.state.dead_tasks = list  # service_runtime's background loops that died (none without it)
    document_problems(app)

    @app.get("/healthz", tags=["operations"], summary="The process is alive: its background loops run")
    async def healthz() -> JSONResponse:
        # A dead loop is in the log already ("background task died"); its name stays out of an
        # unauthenticated answer.
        if app.state.dead_tasks():
            return JSONResponse({"status": "not alive"}, status_code=503)
        return JSONResponse({"status": "alive"})

    @app.get("/readyz", tags=["operations"], summary="Kafka and PostgreSQL are reachable")
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in app.state.readiness_checks.items():
            try:
                await asyncio.wait_for(check(), timeout=2.0)
                results[name] = "ok"
            except Exception as exc:  # any failure means "not ready"; its reason goes to the log only
                log.warning("readiness check failed", extra={"check": name, "error": repr(exc)[:500]})
                results[name] = "unavailable"
        ready = bool(results) and all(v == "ok" for v in results.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": results}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        record_refusal(request, exc.status, exc.code)  # 401, 403 and 409 only; queued, never awaited
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, media_type=PROBLEM_JSON, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]} for e in exc.errors()]
        fields = ", ".join(e["field"] for e in errors)
        body = ApiError(422, "INVALID_REQUEST", f"invalid request: {fields}", errors).body()
        return JSONResponse(body, status_code=422, media_type=PROBLEM_JSON)

    async def invalid_body(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        errors = [{"field": "body", "message": str(exc.detail)}]
        body = ApiError(422, "INVALID_REQUEST", "invalid request: body", errors).body()
        return JSONResponse(body, status_code=422, media_type=PROBLEM_JSON)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot read (e.g. not UTF-8): bad input like any other.
            return await invalid_body(request, exc)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE"}.get(exc.status_code, "HTTP_ERROR")
        record_refusal(request, exc.status_code, code)
        return JSONResponse(ApiError(exc.status_code, code, str(exc.detail)).body(), status_code=exc.status_code, media_type=PROBLEM_JSON)

    install_limits(app)  # inside the metrics: their 413 and 429 are measured
    app.add_middleware(RequestMetrics, service=service)
    app.add_middleware(KnownMethodsOnly)  # outside the metrics: a method name never becomes a label
    return app
