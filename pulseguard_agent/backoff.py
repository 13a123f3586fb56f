"""Exponential backoff with jitter, shared by the client's retries and the runner's loop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay before retry number `attempt` (1-based): base * factor**(attempt-1), capped.

    `jitter` is the fraction of each delay that is random, so a fleet that lost the
    server at the same moment does not come back in lockstep and knock it over again.
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("Backoff needs base >= 0, cap >= 0, factor >= 1 and 0 <= jitter <= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry `attempt` (1 = the first retry)."""
        # The exponent is bounded so a long outage cannot overflow the float.
        raw = min(self.cap, self.base * self.factor ** min(max(attempt - 1, 0), 64))
        return raw * (1 - self.jitter) + self.rng.uniform(0, raw * self.jitter)
