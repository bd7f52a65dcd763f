"""How both backends store instants and JSON, so that either answers exactly what the other does."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson


def iso(moment: datetime) -> str:
    """The stored form of an instant: UTC, fixed width, so text order is time order (naive means UTC)."""
    if moment.tzinfo is UTC:  # the clock's own zone, the usual case: its "+00:00" becomes "Z", no conversion
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    # isoformat, not strftime: several times faster (a few are made per callback), and the year is zero-padded.
    return moment.isoformat(timespec="microseconds") + "Z"


def when(value: str | None) -> datetime | None:
    """An instant as stored by `iso`, or None."""
    return datetime.fromisoformat(value) if value else None


def to_json(value: object) -> str:
    return orjson.dumps(value).decode()
