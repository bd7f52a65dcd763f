"""How both backends store instants and JSON, so that either answers exactly what the other does."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from relay.domain.errors import Rejected

#: Characters of a refusal's reason and element path kept in quarantine: a path through elements with
#: 50,000-character names (or JSON keys of any length) would otherwise put megabytes in every listing.
REFUSAL_CHARS = 1024


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


def refusal(error: Rejected) -> tuple[str, str | None]:
    """What the quarantine keeps of why ``error`` refused a body: its reason and element path, clipped."""
    reason = error.detail if error.rule is None else f"{error.detail}: {error.rule}"
    return _clip(reason), None if error.path is None else _clip(error.path)


def _clip(text: str) -> str:
    return text if len(text) <= REFUSAL_CHARS else text[: REFUSAL_CHARS - 1] + "…"
