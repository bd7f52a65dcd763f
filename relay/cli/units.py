"""Numbers and instants as a person reads them: ``8.386 µs``, ``1.2 ms``, ``2024-11-05 10:00:00.123 UTC``."""

from __future__ import annotations

from datetime import datetime

_SCALES = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))


def duration(seconds: float | None) -> str:
    """Four significant digits in the largest unit that keeps the number at least 1 (``-`` for none)."""
    if seconds is None:
        return "-"
    for scale, unit in _SCALES:
        if abs(seconds) >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return "0 s" if seconds == 0 else f"{seconds / 1e-9:.4g} ns"


def instant(value: str | None) -> str:
    """A stored ISO-8601 UTC instant to the millisecond, with a space for the T; other text unchanged."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"
