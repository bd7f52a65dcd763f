"""Query-string and path parsing for the API, with 400s that name the parameter and what it accepts.

Strict on purpose: ASCII digits only, every number within a range, a parameter given at most once.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from starlette.datastructures import QueryParams

from relay.domain import numbers
from relay.domain.errors import BadParameter
from relay.store.rows import MAX_ID as MAX_ID  # ids and cursors: the store's 64-bit integers

MAX_LIMIT = 500
#: ``since=7d`` and friends reach back at most this far (a century: anything older is "everything").
MAX_SPAN_DAYS = 36500
_ISO_EXAMPLE = "2024-11-05T10:00:00Z"


def one(params: QueryParams, name: str) -> str | None:
    """The parameter's value; two of them are ambiguous (which one did the caller mean?), so 400."""
    values = params.getlist(name)
    if len(values) > 1:
        raise BadParameter(f"{name} is given {len(values)} times; give it once")
    return values[0] if values else None


def spelled(raw: str, allowed: Collection[str]) -> str | None:
    """``raw`` as ``allowed`` spells it, ignoring case (``success`` -> ``Success``); None if it is not there."""
    return next((value for value in allowed if value.casefold() == raw.casefold()), None)


def folded_choice(params: QueryParams, name: str, allowed: Collection[str]) -> str | None:
    """Like `choice`, ignoring case (``state=success``), and giving the value as ``allowed`` spells it."""
    raw = one(params, name)
    if raw is None:
        return None
    value = spelled(raw, allowed)
    if value is None:
        raise BadParameter(f"{name} must be one of {', '.join(allowed)} (any case)")
    return value


def limit(params: QueryParams, default: int = 50) -> int:
    raw = one(params, "limit")
    if raw is None:
        return default
    try:
        return numbers.whole(raw, 1, MAX_LIMIT)
    except ValueError as exc:
        raise BadParameter(f"limit {exc}") from None


def identifier(raw: str, what: str) -> int:
    """A row id from a path, e.g. ``/api/deliveries/{id}``."""
    try:
        return numbers.whole(raw, 1, MAX_ID)
    except ValueError as exc:
        raise BadParameter(f"a {what} is a number: it {exc}") from None


def _instant(raw: str, name: str, expected: str) -> datetime:
    """An ISO-8601 instant as an aware UTC datetime (naive means UTC); 400 saying ``expected`` if not."""
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        # An offset can push the first or last representable day out of range: 0001-01-01T00:00+14:00.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise BadParameter(f"{name} must {expected}") from None
    except OverflowError:
        raise BadParameter(f"{name} is out of range: it must be from year 1 to year 9999 in UTC") from None


def since(params: QueryParams, now: datetime) -> str | None:
    """``since``: a duration back from ``now`` (``2h``) or an ISO-8601 instant (`parse_since`), normalised to
    the UTC form the store keeps."""
    raw = one(params, "since")
    if raw is None:
        return None
    return parse_since(raw, now).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cursor(params: QueryParams, *, numeric: bool = False, pair: bool = False, name: str = "cursor") -> str | None:
    """The previous page's ``next_cursor``: an id, (jobs) ``<id>:<job id>`` or (``pair``, deliveries)
    ``<number>:<number>``; ``name``: the parameter's."""
    raw = one(params, name)
    if raw is None:
        return None
    head, colon, tail = raw.partition(":")
    try:
        if numeric and colon:
            raise ValueError
        if pair:
            numbers.whole(tail, 0, MAX_ID)
        numbers.whole(head, 0, MAX_ID)
    except ValueError:
        raise BadParameter(f"{name} must be the value returned by the previous page") from None
    return raw


def parse_since(value: str | None, now: datetime) -> datetime:
    """A duration ago in the one grammar of durations (``2h``, ``30m``, ``7d``, ``90s``, plain seconds:
    `relay.domain.numbers.ascii_span`), or an ISO-8601 instant; always an aware UTC datetime."""
    if not value:
        raise BadParameter(f"since is required, e.g. since=2h or since={_ISO_EXAMPLE}")
    seconds = numbers.ascii_span(value)
    if seconds is None:
        return _instant(value, "since", "look like 2h, 30m, 7d or an ISO-8601 instant")
    if seconds > MAX_SPAN_DAYS * 86400:
        raise BadParameter(f"since reaches back at most {MAX_SPAN_DAYS}d ({MAX_SPAN_DAYS // 365} years)")
    try:
        return (now - timedelta(seconds=seconds)).astimezone(UTC)
    except OverflowError:
        raise BadParameter("since reaches back before year 1") from None
