"""Numbers people write (query strings, options, environment): ASCII digits only, always within a range.

``int()`` and ``float()`` take far more than anyone means: ``'٣'`` (Arabic-Indic three), ``'1_000'``,
``' 7 '``, ``'nan'``, ``'inf'`` and ``'1e308'`` all parse, and ``'²'`` passes ``str.isdigit()`` but not
``int()``. Each parser raises ValueError with a message that starts "must be" and states the accepted
form and range, so callers prefix the parameter's name.
"""

from __future__ import annotations

import math
import re

_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
#: Longer texts are refused before conversion: int() of thousands of digits is slow (and then refused).
_LONGEST = 40


def ascii_whole(text: str) -> int | None:
    """``text`` as an int if it is ASCII digits only (no sign or blanks), else None."""
    return int(text) if len(text) <= _LONGEST and _WHOLE.fullmatch(text) else None


def ascii_decimal(text: str) -> float | None:
    """``text`` as a float if it is ASCII decimal notation (``0.5``, ``1e3``), else None; never NaN or infinite."""
    value = float(text) if len(text) <= _LONGEST and _DECIMAL.fullmatch(text) else None
    return value if value is not None and math.isfinite(value) else None


def whole(text: str, low: int, high: int) -> int:
    """``text`` as an int from ``low`` to ``high`` (ASCII digits only, no sign or blanks)."""
    value = ascii_whole(text)
    if value is None or not low <= value <= high:
        raise ValueError(f"must be an integer from {low} to {high}")
    return value


def decimal(text: str, low: float, high: float) -> float:
    """``text`` as a float from ``low`` to ``high``.

    ASCII decimal notation with an optional exponent (``0.5``, ``1e3``); never NaN or infinite.
    """
    value = ascii_decimal(text)
    if value is None or not low <= value <= high:
        raise ValueError(f"must be a number from {low:g} to {high:g}")
    return value


_SPAN = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
#: Seconds in each unit a span may be written in.
SPAN_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def ascii_span(text: str) -> float | None:
    """``30d``, ``12h``, ``45m``, ``90s`` or a plain number of seconds, in seconds; else None."""
    match = _SPAN.fullmatch(text) if len(text) <= _LONGEST else None
    return float(match[1]) * SPAN_UNITS[match[2]] if match else None


def span_text(seconds: float) -> str:
    """``seconds`` in the largest unit that divides it: 2592000 is ``30d``, 90 is ``90s``."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m"):
        if seconds and seconds % SPAN_UNITS[unit] == 0:
            return f"{seconds / SPAN_UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"
