"""The retry schedule: exponential backoff with full jitter, capped, then give up."""

from __future__ import annotations

import random

import pytest

from reflexe_notify.domain.retry import Outcome, RetryPolicy

POLICY = RetryPolicy(max_attempts=8, base_seconds=1.0, max_seconds=300.0)


def test_the_ceiling_doubles_then_is_capped() -> None:
    assert [POLICY.ceiling(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert POLICY.ceiling(10_000) == 300  # no overflow however many attempts


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    rng = random.Random(7)
    for attempts in range(1, 30):
        delays = [POLICY.delay(attempts, rng.random) for _ in range(200)]
        assert all(0 <= d <= POLICY.ceiling(attempts) for d in delays)
    assert POLICY.delay(3, lambda: 0.0) == 0 and POLICY.delay(3, lambda: 0.999) == pytest.approx(3.996)


def test_jitter_spreads_the_retries() -> None:
    rng = random.Random(1)
    delays = [POLICY.delay(5, rng.random) for _ in range(1000)]
    assert min(delays) < 2 and max(delays) > 14


@pytest.mark.parametrize(("status", "attempts", "expected"), [
    (200, 1, Outcome.DELIVERED), (204, 8, Outcome.DELIVERED),
    (410, 1, Outcome.GONE),
    (500, 1, Outcome.RETRY), (429, 3, Outcome.RETRY), (404, 7, Outcome.RETRY), (302, 1, Outcome.RETRY),
    (None, 1, Outcome.RETRY),
    (500, 8, Outcome.FAILED), (None, 8, Outcome.FAILED), (400, 9, Outcome.FAILED),
])
def test_outcome_of_an_attempt(status: int | None, attempts: int, expected: Outcome) -> None:
    assert POLICY.outcome(status, attempts) is expected


def test_a_manual_retry_raises_the_limit() -> None:
    assert POLICY.exhausted(8) and not POLICY.exhausted(8, limit=16)
    assert POLICY.outcome(500, 9, limit=16) is Outcome.RETRY
