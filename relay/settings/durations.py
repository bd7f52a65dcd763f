"""Durations as operators write them (``30d``, ``12h``, ``45m``, ``90s``, ``forever``): the retention windows, the
pruner's interval and ``cos-relay prune``'s options."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from relay.domain import numbers
from relay.settings.kinds import Kind


@dataclass(frozen=True)
class Duration(Kind):
    """A span an operator writes as ``30d``, ``12h``, ``45m``, ``90s`` or plain seconds, up to ``maximum`` seconds.

    ``zero`` allows 0; ``forever`` allows the word ``forever`` (infinity: a window that never closes).
    """

    maximum: float = 3650 * 86400.0
    zero: bool = False
    forever: bool = False

    @property
    def metavar(self) -> str:
        return "DURATION"

    @property
    def form(self) -> str:
        low = "from 0" if self.zero else "more than 0"
        forever = ", or forever" if self.forever else ""
        return f"a duration like 30d, 12h, 45m or 90s, {low} up to {numbers.span_text(self.maximum)}{forever}"

    def convert(self, text: str) -> Any:
        if self.forever and text.lower() == "forever":
            return math.inf
        value = numbers.ascii_span(text)
        if value is None:
            raise ValueError(f"{text!r} is not {self.form}")
        return value

    def check(self, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and value == math.inf and self.forever:
            return
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
            or (value == 0 and not self.zero)
            or value > self.maximum
        ):
            raise ValueError(f"{value!r} is not {self.form}")

    def show(self, value: Any) -> str:
        return "forever" if value == math.inf else numbers.span_text(value)
