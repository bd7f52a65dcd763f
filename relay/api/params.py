"""Query-string parsing for the API, with 400s that say what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.datastructures import QueryParams

from relay.errors import Rejected

MAX_LIMIT = 500


class BadParameter(Rejected):
    """A query parameter is not valid."""

    status = 400
    outcome = "bad_request"
    quarantined = False


def limit(params: QueryParams, default: int = 50) -> int:
    raw = params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadParameter(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def since(params: QueryParams) -> str | None:
    """An ISO-8601 instant, normalised to the UTC form the store keeps."""
    raw = params.get("since")
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter("since must be an ISO-8601 date or time, e.g. 2024-11-05T10:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cursor(params: QueryParams, *, numeric: bool = False) -> str | None:
    raw = params.get("cursor")
    if raw is None:
        return None
    head = raw.partition(":")[0]
    if not head.isdigit() or (numeric and head != raw):
        raise BadParameter("cursor must be the value returned by the previous page")
    return raw


def parse_since(value: str | None, now: datetime) -> datetime:
    """``2h``, ``30m``, ``7d``, ``90s`` ago, or an ISO-8601 instant."""
    if not value:
        raise BadParameter("since is required, e.g. since=2h or since=2024-11-05T10:00:00Z")
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].isdigit():
        return now - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter("since must look like 2h, 30m, 7d or an ISO-8601 instant") from None
