"""Logging setup: readable text, or one JSON object per line with the fields operators grep for."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import orjson

LogFormat = Literal["text", "json"]

#: ``extra=`` fields copied into JSON lines. Only ids, names and outcomes: never bodies, tokens or secrets.
FIELDS = ("action", "outcome", "job_id", "event_id", "subscriber", "delivery_id", "callback_id", "quarantine_id")


#: The most of any one value from a request (a header, a token, a detail quoting one) a log line carries.
MAX_VALUE = 200


def clip(value: str, limit: int = MAX_VALUE) -> str:
    """``value`` cut to ``limit`` characters, with a marker saying how much was left out."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}...[{len(value) - limit} more characters]"


class Throttle:
    """At most one line per key and ``interval``: a flood of one refusal logs a line now and then, not each.

    Keys must be a bounded set (outcomes, say). The lines held back are counted, and the next line let
    through says how many there were; metrics count every event anyway.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: hold this line back. Otherwise log it, with the number of lines held back since the last."""
        now = self._clock()
        if now < self._next.get(key, now):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self._interval
        return self._held.pop(key, 0)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "info", fmt: LogFormat = "text") -> None:
    """Send every logger (uvicorn's too) to stderr in one format."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn's protocols write an access line whenever this logger has a handler, whatever `access_log`
    # says; the line holds the callback URL, token included. cos-relay logs each callback itself.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
