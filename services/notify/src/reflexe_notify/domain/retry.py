"""When to try a webhook again: exponential backoff with full jitter, capped, then give up.

Full jitter (a delay drawn uniformly in [0, ceiling]) spreads the retries of many deliveries
that failed together, so a receiver coming back up is not hit by a synchronised wave.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    DELIVERED = "delivered"  # 2xx: the receiver has it
    RETRY = "retry"  # anything else (4xx, 5xx, 3xx, timeout, refused) while attempts remain
    FAILED = "failed"  # the same once no attempt remains: dead-lettered, the desk is told
    GONE = "gone"  # 410: the receiver asks us to stop; the subscription is disabled


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float

    def ceiling(self, attempts: int) -> float:
        """The largest delay after the `attempts`-th failed attempt (1, 2, ...)."""
        exponent = min(max(attempts - 1, 0), 62)  # 2**62 already exceeds any cap
        return min(self.max_seconds, self.base_seconds * 2**exponent)

    def delay(self, attempts: int, draw: Callable[[], float] = random.random) -> float:
        return draw() * self.ceiling(attempts)

    def exhausted(self, attempts: int, limit: int | None = None) -> bool:
        """True when no attempt is left (`limit` overrides max_attempts after a manual retry)."""
        return attempts >= (self.max_attempts if limit is None else limit)

    def outcome(self, http_status: int | None, attempts: int, limit: int | None = None) -> Outcome:
        """What an attempt's answer (None: no answer) means. Any other 4xx is retried too: a
        receiver's 401/404 is usually a deployment or configuration slip that gets fixed."""
        if http_status is not None and 200 <= http_status < 300:
            return Outcome.DELIVERED
        if http_status == 410:
            return Outcome.GONE
        return Outcome.FAILED if self.exhausted(attempts, limit) else Outcome.RETRY
