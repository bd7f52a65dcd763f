"""Retry schedule: how long to wait after each failed delivery attempt, and when to give up."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from relay.schedule import DEFAULT_SCHEDULE, MAX_DELAY


@dataclass(frozen=True)
class RetryPolicy:
    """Delays between attempts: a fixed schedule with ± jitter, stretched by Retry-After within a cap."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    #: ± fraction of each delay, so endpoints that failed together don't all retry together.
    jitter: float = 0.2
    #: Retry-After is honoured within [schedule delay .. cap]: it can slow us down, never speed us up,
    #: and a subscriber cannot park a message for days.
    retry_after_cap: float = 3600.0

    def __post_init__(self) -> None:
        if not all(math.isfinite(delay) and delay >= 0 for delay in self.schedule):
            raise ValueError("retry schedule delays must be finite and >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be a fraction between 0 and 1")
        if not self.retry_after_cap >= 0:
            raise ValueError("retry_after_cap must be >= 0")

    def next_delay(self, failed_attempts: int, retry_after: float | None, rand: Callable[[], float]) -> float | None:
        """After the Nth failed attempt (1-based), the delay before the next one; None when dead.

        ``rand`` returns a float in [0, 1) (e.g. ``random.random``), injected for deterministic tests.
        """
        if failed_attempts < 1:
            raise ValueError("failed_attempts counts from 1")
        if failed_attempts > len(self.schedule):
            return None
        # Capped again here for schedules stored before steps were bounded.
        step = min(self.schedule[failed_attempts - 1], MAX_DELAY)
        delay = step * (1 + self.jitter * (2 * rand() - 1))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay
