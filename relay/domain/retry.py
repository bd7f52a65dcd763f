"""Retry schedules: the default, the bounds every schedule keeps, and the delay after each failed attempt.

Operators write schedules in the environment, the API, TOML and on the command line; all of them come
through `parse_schedule` or `check_schedule`. The delivery decision reads `RetryPolicy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.domain import numbers

#: Svix's schedule, also the Standard Webhooks example: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; then dead.
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)


#: One step waits at most a week: longer parks a delivery past any use, and near float's maximum the
#: next attempt's time overflows (every lease then failed again, connecting each time).
MAX_DELAY = 7 * 24 * 3600.0
#: A schedule of more steps is a typo, or a way to retry for ever.
MAX_STEPS = 20
_RANGE = f"from 0 to {MAX_DELAY:g} (7 days)"


def check_schedule(schedule: Sequence[object]) -> tuple[float, ...]:
    """A schedule from JSON or TOML as floats; ValueError unless it is 1 to 20 delays, each 0 s to 7 days.

    Booleans are refused although Python counts them as ints; NaN and infinities fail the range.
    """
    if not schedule or len(schedule) > MAX_STEPS:
        raise ValueError(f"a retry schedule is 1 to {MAX_STEPS} delays, not {len(schedule)}")
    delays = []
    for delay in schedule:
        # Compared before any float(): a TOML integer of 400 digits must not overflow on the way.
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY:
            raise ValueError(f"a retry schedule is a list of seconds {_RANGE}; {delay!r} is not")
        delays.append(float(delay))
    return tuple(delays)


def _delay(text: str) -> float:
    """One delay in the one grammar of durations (``5s``, ``5m``, ``2h``, ``1d``), or a number of seconds."""
    seconds = numbers.ascii_span(text)
    try:
        return numbers.decimal(text, 0, MAX_DELAY) if seconds is None else numbers.decimal(str(seconds), 0, MAX_DELAY)
    except ValueError:
        raise ValueError(f"retry delay {text!r} is not a number of seconds {_RANGE}, nor a duration like 5m") from None


def parse_schedule(value: str) -> tuple[float, ...]:
    """Parse ``"5,300,1800"`` or ``"5s,5m,30m"`` into ``(5.0, 300.0, 1800.0)``; ValueError on junk, out of range or
    nothing."""
    if not value.strip():
        raise ValueError("retry schedule is empty")
    return check_schedule([_delay(item.strip()) for item in value.split(",")])


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
