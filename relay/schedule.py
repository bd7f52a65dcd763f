"""Retry schedules as operators write them: the default, and the bounds every schedule must keep.

Below both the settings and the delivery worker, which each read schedules (the environment, the API,
TOML and the command line all come through `parse_schedule` or `check_schedule`).
"""

from __future__ import annotations

from collections.abc import Sequence

from relay import numbers

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
    try:
        return numbers.decimal(text, 0, MAX_DELAY)
    except ValueError:
        raise ValueError(f"retry delay {text!r} is not a number of seconds {_RANGE}") from None


def parse_schedule(value: str) -> tuple[float, ...]:
    """Parse ``"5,300,1800"`` into ``(5.0, 300.0, 1800.0)``; ValueError on junk, out of range or nothing."""
    if not value.strip():
        raise ValueError("retry schedule is empty")
    return check_schedule([_delay(item.strip()) for item in value.split(",")])
