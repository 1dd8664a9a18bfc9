"""When to try a webhook again: exponential backoff with full jitter, capped, then give up.

Full jitter (a delay drawn uniformly in [0, ceiling]) spreads the retries of many deliveries
that failed together, so a receiver coming back up is not hit by a synchronised wave.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


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
