"""Subscriber options as users write them (JSON body, TOML entry): types, ranges, and the filter they build."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from relay.deliver.robots.templates import check_template
from relay.domain import numbers
from relay.domain.destinations import Kind, parse_content_mode, parse_kind, parse_rate
from relay.domain.errors import BadSubscriber
from relay.domain.filters import Filter, check_types
from relay.domain.subscribers import DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT, check_limits, check_text

#: The options a subscriber definition may carry (JSON body or TOML entry), besides its name.
OPTIONS = (
    "url",
    "secret",
    "types",
    "filters",
    "max_in_flight",
    "timeout",
    "retry_schedule",
    "store_response",
    "kind",
    "rate",
    "handshake",
    "content_mode",
    "template",
)


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Type-check user-written subscriber options, with messages a user understands."""

    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise BadSubscriber(f"unknown field(s): {', '.join(sorted(unknown))}")
    checked = dict(options)
    if "types" in checked and isinstance(checked["types"], str):
        checked["types"] = [checked["types"]]  # one type written as a plain string
    schedule = checked.get("retry_schedule")
    if isinstance(schedule, list):
        # The one grammar of durations: ["5s", "5m", "2h"] as well as [5, 300, 7200].
        checked["retry_schedule"] = [_seconds(delay) for delay in schedule]
    rules: dict[str, tuple[Callable[[Any], bool], str]] = {
        "url": (lambda v: isinstance(v, str), "a string"),
        "secret": (lambda v: isinstance(v, str), "a string (whsec_...)"),
        "types": (
            lambda v: isinstance(v, list) and bool(v) and all(isinstance(t, str) for t in v),
            "a list of event types",
        ),
        "filters": (
            lambda v: (
                isinstance(v, dict | list)
                and all(isinstance(x, str) for x in (v.values() if isinstance(v, dict) else v))
            ),
            "an object of strings or a list of KEY=VALUE strings",
        ),
        "max_in_flight": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
        "timeout": (number, "a number of seconds"),
        "retry_schedule": (
            lambda v: v is None or (isinstance(v, list) and all(map(number, v))),
            "a list of delays (seconds, or durations like 5m)",
        ),
        "store_response": (lambda v: isinstance(v, bool), "true or false"),
        "kind": (lambda v: isinstance(v, str), f"one of {', '.join(Kind)}"),
        "rate": (lambda v: v is None or isinstance(v, str), 'a count per second or minute, like "10/s" or "600/m"'),
        "handshake": (lambda v: isinstance(v, bool), "true or false"),
        "content_mode": (lambda v: isinstance(v, str), "structured or binary"),
        "template": (lambda v: v is None or isinstance(v, str), "a string"),
    }
    for key, value in checked.items():
        valid, expected = rules[key]
        if not valid(value):
            raise BadSubscriber(f"{key} must be {expected}")
    # Ranges too, so that a config file with one bad entry is refused before any entry is applied.
    try:
        check_limits(
            checked.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT),
            checked.get("timeout", DEFAULT_TIMEOUT),
            checked.get("retry_schedule"),
        )
        build_filter(checked.get("types"), checked.get("filters", {}))
        if "kind" in checked:
            checked["kind"] = parse_kind(checked["kind"])
        if checked.get("rate") is not None:
            checked["rate"] = parse_rate(checked["rate"])
        if "content_mode" in checked:
            checked["content_mode"] = parse_content_mode(checked["content_mode"])
        if checked.get("template") is not None:
            check_template(checked["template"])
    except ValueError as exc:
        raise BadSubscriber(str(exc)) from None
    return checked


def _seconds(delay: object) -> object:
    """A delay written as a duration (``"5m"``) in seconds; anything else as it was, for the type check."""
    if isinstance(delay, str):
        seconds = numbers.ascii_span(delay.strip())
        return delay if seconds is None else seconds
    return delay


def build_filter(types: Sequence[str] | None, filters: Mapping[str, str] | Sequence[str]) -> Filter:
    """The filter of ``types`` (None: every type) and ``filters`` (a mapping, or KEY=VALUE strings)."""
    types = ("*",) if types is None else tuple(types)
    check_types(types)
    built = Filter(types, dict(filters)) if isinstance(filters, Mapping) else Filter.parse(types, filters)
    for key, value in built.match.items():
        check_text(value, f"filter {key}")
    return built
