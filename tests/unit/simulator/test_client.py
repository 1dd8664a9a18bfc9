"""The simulator's platform client against a fake platform (httpx mock transport, no network)."""

from __future__ import annotations

import time

import httpx

from reflexe_simulator.client import FORGET_TOKENS_AFTER_SECONDS, PlatformClient, Tokens


class CountingSource:
    """Issues token-1, token-2, ... each valid for an hour by its own account."""

    def __init__(self) -> None:
        self.fetched: list[tuple[str, str | None]] = []

    async def fetch(self, role, *, finess=None, department=None):
        self.fetched.append((role, finess))
        return f"token-{len(self.fetched)}", 4e9


def platform_refusing(*expired: str):
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        seen.append(token)
        if token in expired:
            return httpx.Response(401, json={"code": "INVALID_TOKEN", "title": "invalid bearer token: Signature has expired"})
        return httpx.Response(201, json={"referral_id": "r1"})

    return answer, seen


async def test_a_token_expired_while_its_request_waited_is_renewed_and_the_same_request_sent_again():
    source = CountingSource()
    answer, seen = platform_refusing("token-1")
    client = PlatformClient("http://ref", "http://cap", "http://not", source, attempts=3, backoff=0,
                            transport=httpx.MockTransport(answer))
    result = await client.post_referral("340000017", {"referral_id": "r1"})
    assert result.status == 201
    assert seen == ["token-1", "token-2"]
    assert source.fetched == [("hospital", "340000017"), ("hospital", "340000017")]
    assert await client.tokens.get("hospital", finess="340000017") == "token-2"  # the fresh one is kept
    await client.aclose()


async def test_a_token_refused_again_once_renewed_is_an_answer_not_a_loop():
    source = CountingSource()
    answer, seen = platform_refusing("token-1", "token-2")
    client = PlatformClient("http://ref", "http://cap", "http://not", source, attempts=5, backoff=0,
                            transport=httpx.MockTransport(answer))
    result = await client.post_referral("340000017", {"referral_id": "r1"})
    assert result.status == 401
    assert seen == ["token-1", "token-2"]
    await client.aclose()


async def test_tokens_long_expired_are_forgotten_and_recent_ones_still_renewed():
    """The actor of each issued token is remembered, to renew it when refused; a simulator that
    runs for days must not remember every token it was ever issued."""
    now = time.time()
    lifetimes = iter([now - FORGET_TOKENS_AFTER_SECONDS - 60, now - 30, now + 3600])

    class Source:
        issued = 0

        async def fetch(self, role, *, finess=None, department=None):
            Source.issued += 1
            return f"token-{Source.issued}", next(lifetimes)

    tokens = Tokens(Source())
    assert await tokens.get("hospital", finess="340000017") == "token-1"  # expired long ago
    assert await tokens.get("hospital", finess="340780477") == "token-2"  # expired a moment ago
    assert await tokens.renewed("token-1") is None
    assert await tokens.renewed("token-2") == "token-3"
