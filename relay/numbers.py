"""Numbers people write (query strings, options, environment): ASCII digits only, always within a range.

``int()`` and ``float()`` take far more than anyone means: ``'٣'`` (Arabic-Indic three), ``'1_000'``,
``' 7 '``, ``'nan'``, ``'inf'`` and ``'1e308'`` all parse, and ``'²'`` passes ``str.isdigit()`` but not
``int()``. Each parser raises ValueError with a message that starts "must be" and states the accepted
form and range, so callers prefix the parameter's name.
"""

from __future__ import annotations

import re

_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
#: Longer texts are refused before conversion: int() of thousands of digits is slow (and then refused).
_LONGEST = 40


def whole(text: str, low: int, high: int) -> int:
    """``text`` as an int from ``low`` to ``high`` (ASCII digits only, no sign or blanks)."""
    if len(text) > _LONGEST or not _WHOLE.fullmatch(text) or not low <= int(text) <= high:
        raise ValueError(f"must be an integer from {low} to {high}")
    return int(text)


def decimal(text: str, low: float, high: float, *, above_low: bool = False) -> float:
    """``text`` as a float from ``low`` (or above it, with ``above_low``) to ``high``.

    ASCII decimal notation with an optional exponent (``0.5``, ``1e3``); never NaN or infinite.
    """
    value = float(text) if len(text) <= _LONGEST and _DECIMAL.fullmatch(text) else None
    in_range = value is not None and (low < value if above_low else low <= value) and value <= high
    if value is None or not in_range:
        span = f"more than {low:g} and at most {high:g}" if above_low else f"from {low:g} to {high:g}"
        raise ValueError(f"must be a number {span}")
    return value
