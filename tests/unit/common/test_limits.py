"""The limits at the door, on the real app shell (create_app) in memory: body size, methods,
rate per caller, pagination bounds, readiness without exception text."""

from __future__ import annotations

import math
from urllib.parse import parse_qs
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import Depends, Request
from prometheus_client import REGISTRY

from reflexe_common.auth import Principal, Role, authenticated
from reflexe_common.errors import ApiError
from reflexe_common.http import create_app
from reflexe_common.limits import MAX_PAGE_SIZE, LimitSettings, Page, TokenBuckets, VerifiedOnce, pagination
from reflexe_common.settings import ServiceSettings


class FakeVerifier:
    """Tokens 'good-<sub>' verify as that subject; anything else is refused."""

    async def verify(self, token: str) -> Principal:
        if not token.startswith("good-"):
            raise ApiError(401, "INVALID_TOKEN", "invalid bearer token")
        return Principal(role=Role.ADMIN, subject=token.removeprefix("good-"))


def build(monkeypatch, **limits: str):
    for name, value in limits.items():
        monkeypatch.setenv(name, value)

    @asynccontextmanager
    async def lifespan(_):
        yield

    app = create_app("limits-test", ServiceSettings(OIDC_ISSUER="http://issuer.invalid"), lifespan)
    app.state.verifier = FakeVerifier()

    async def failing_check() -> None:
        raise ConnectionRefusedError("secret-host.internal:5432 refused")

    app.state.readiness_checks["postgres"] = failing_check

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/json")
    async def json_body(body: dict) -> dict[str, int]:
        return {"keys": len(body)}

    @app.post("/form")
    async def form(request: Request) -> dict[str, int]:
        # As the desk page reads its forms (no multipart parser in the platform).
        return {"fields": len(parse_qs((await request.body()).decode()))}

    @app.get("/items")
    async def items(page: Page = Depends(pagination(20))) -> dict[str, int]:
        return {"limit": page.limit, "offset": page.offset}

    return app


def client(app, address: str = "10.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 1234)), base_url="http://t")


async def test_a_body_above_the_limit_is_refused_with_problem_json(monkeypatch):
    app = build(monkeypatch, REQUEST_BODY_MAX_BYTES="1000")
    async with client(app) as c:
        assert (await c.post("/echo", content=b"x" * 1000)).json() == {"bytes": 1000}
        for path in ("/echo", "/json"):
            response = await c.post(path, content=b"x" * 1001, headers={"content-type": "application/json"})
            assert response.status_code == 413, path
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "REQUEST_TOO_LARGE"


async def test_a_streamed_body_without_content_length_is_counted(monkeypatch):
    app = build(monkeypatch, REQUEST_BODY_MAX_BYTES="1000")

    async def chunks():
        for _ in range(5):
            yield b'{"a": "' + b"y" * 300 + b'"}'

    async with client(app) as c:
        for path in ("/echo", "/json"):
            response = await c.post(path, content=chunks(), headers={"content-type": "application/json"})
            assert "content-length" not in response.request.headers
            assert response.status_code == 413, (path, response.text)
            assert response.json()["code"] == "REQUEST_TOO_LARGE"


async def test_a_form_above_the_limit_is_refused(monkeypatch):
    app = build(monkeypatch, REQUEST_BODY_MAX_BYTES="1000")
    async with client(app) as c:
        assert (await c.post("/form", data={"a": "1", "b": "2"})).json() == {"fields": 2}
        response = await c.post("/form", data={"a": "z" * 2000})
        assert response.status_code == 413 and response.json()["code"] == "REQUEST_TOO_LARGE"


async def test_unknown_methods_are_refused_before_the_metrics_see_them(monkeypatch):
    app = build(monkeypatch)
    async with client(app) as c:
        response = await c.request("BREW", "/healthz")
        assert response.status_code == 501 and response.json()["code"] == "METHOD_NOT_IMPLEMENTED"
        assert "GET" in response.headers["allow"]
        assert (await c.request("DELETE", "/healthz")).status_code == 405  # known, not allowed here
    methods = {s.labels["method"] for m in REGISTRY.collect() if m.name == "reflexe_http_request_duration_seconds"
               for s in m.samples if s.labels.get("service") == "limits-test"}
    assert "BREW" not in methods and "DELETE" in methods


async def test_each_caller_has_its_own_bucket_and_gets_retry_after(monkeypatch):
    app = build(monkeypatch, RATE_LIMIT_BURST="3", RATE_LIMIT_PER_SECOND="0.01")
    async with client(app) as c, client(app, "10.0.0.2") as other:
        alice = {"Authorization": "Bearer good-alice"}
        for _ in range(3):
            assert (await c.get("/items", headers=alice)).status_code == 200
        refused = await c.get("/items", headers=alice)
        assert refused.status_code == 429 and refused.json()["code"] == "TOO_MANY_REQUESTS"
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) == math.ceil(1 / 0.01)
        # Another subject from the same address, and the address without a token, still pass.
        assert (await c.get("/items", headers={"Authorization": "Bearer good-bob"})).status_code == 200
        assert (await c.get("/items")).status_code == 200
        # A token that does not verify counts against its address, not against the subject it names.
        for _ in range(2):
            assert (await other.get("/items", headers={"Authorization": "Bearer forged-alice"})).status_code == 200
        assert (await other.get("/items")).status_code == 200
        assert (await other.get("/items")).status_code == 429
        # Probes and scrapers are never limited.
        for _ in range(5):
            assert (await c.get("/healthz", headers=alice)).status_code == 200
            assert (await c.get("/metrics", headers=alice)).status_code == 200


async def test_pagination_is_bounded_and_names_the_field(monkeypatch):
    app = build(monkeypatch)
    async with client(app) as c:
        assert (await c.get("/items")).json() == {"limit": 20, "offset": 0}
        assert (await c.get(f"/items?limit={MAX_PAGE_SIZE}&offset=40")).json() == {"limit": MAX_PAGE_SIZE, "offset": 40}
        for query, field in [("limit=0", "query.limit"), ("limit=-5", "query.limit"),
                             (f"limit={MAX_PAGE_SIZE + 1}", "query.limit"), ("offset=-1", "query.offset"),
                             ("limit=abc", "query.limit")]:
            response = await c.get(f"/items?{query}")
            assert response.status_code == 422, query
            assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_readiness_says_unavailable_without_the_exception_text(monkeypatch, caplog):
    app = build(monkeypatch)
    async with client(app) as c:
        response = await c.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"postgres": "unavailable"}
    assert "secret-host" not in response.text
    assert any("secret-host" in getattr(r, "error", "") for r in caplog.records)


@pytest.mark.parametrize("rate, burst", [(1.0, 1), (10.0, 5), (0.5, 3)])
def test_token_bucket_refills_at_its_rate_up_to_its_burst(rate, burst):
    now = [0.0]
    buckets = TokenBuckets(rate, burst, clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(burst)] == [0.0] * burst
    wait = buckets.take("k")
    assert wait == pytest.approx(1 / rate)
    now[0] += wait
    assert buckets.take("k") == 0.0
    now[0] += 1000  # a long idle refills to the burst, not beyond
    assert [buckets.take("k") for _ in range(burst)] == [0.0] * burst
    assert buckets.take("k") > 0


def test_full_buckets_are_forgotten_when_the_table_grows():
    now = [0.0]
    buckets = TokenBuckets(1.0, 2, clock=lambda: now[0], max_keys=10)
    for i in range(10):
        buckets.take(f"caller-{i}")
    now[0] += 5  # every bucket is full again
    buckets.take("newcomer")
    assert len(buckets) == 0 or len(buckets) <= 1
    assert buckets.take("caller-1") == 0.0


async def test_a_token_is_verified_once_per_request(monkeypatch):
    app = build(monkeypatch)
    verified: list[str] = []

    class Counting(FakeVerifier):
        async def verify(self, token: str) -> Principal:
            verified.append(token)
            return await super().verify(token)

    app.state.verifier = VerifiedOnce(Counting())

    @app.get("/me")
    async def me(principal: Principal = Depends(authenticated)) -> dict[str, str]:
        return {"subject": principal.subject}

    async with client(app) as c:
        for name in ("alice", "bob"):
            response = await c.get("/me", headers={"Authorization": f"Bearer good-{name}"})
            assert response.json() == {"subject": name}
        assert (await c.get("/me", headers={"Authorization": "Bearer forged"})).status_code == 401
    # Once by the rate limit, reused by the endpoint; a token that fails is tried again by the endpoint.
    assert verified == ["good-alice", "good-bob", "forged", "forged"]


def test_limit_settings_defaults():
    settings = LimitSettings()
    assert settings.request_body_max_bytes == 256 * 1024
    assert settings.rate_limit_burst >= 1 and settings.rate_limit_per_second > 0
