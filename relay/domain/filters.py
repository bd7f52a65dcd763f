"""Subscriber filters: which events a subscriber wants."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from relay.domain.events import EVENT_TYPES, Event

#: Filter keys a subscriber may set, besides event types.
FILTER_KEYS = ("tag", "state", "queue_id", "bucket", "object_prefix")


@dataclass(frozen=True)
class Filter:
    """Event types (``*`` wildcards) plus exact Tag/State/QueueId/bucket matches and an object-key prefix."""

    types: tuple[str, ...] = ("*",)
    match: Mapping[str, str] = field(default_factory=dict)
    _patterns: re.Pattern[str] = field(init=False, repr=False, compare=False)
    #: Every event matches (the default filter): fan-out skips the check, once per subscriber per event.
    everything: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.match) - set(FILTER_KEYS)
        if unknown:
            raise ValueError(f"unknown filter key(s) {sorted(unknown)}; use {', '.join(FILTER_KEYS)}")
        if not self.types:
            raise ValueError("a subscriber needs at least one event type (use '*' for all)")
        pattern = "|".join(fnmatch.translate(event_type) for event_type in self.types)
        object.__setattr__(self, "_patterns", re.compile(pattern))
        object.__setattr__(self, "everything", "*" in self.types and not self.match)

    @classmethod
    def parse(cls, types: Sequence[str], pairs: Sequence[str]) -> Filter:
        """From CLI-style ``--type T`` and ``--filter KEY=VALUE`` values."""
        match: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"filter {pair!r} is not KEY=VALUE")
            match[key.strip()] = value
        return cls(tuple(types) or ("*",), match)

    def matches(self, event: Event) -> bool:
        if not self._patterns.fullmatch(event.type):
            return False
        for key, wanted in self.match.items():
            if key == "object_prefix":
                if not (event.object_key or "").startswith(wanted):
                    return False
            elif getattr(event, key) != wanted:
                return False
        return True


def check_types(types: Sequence[str]) -> None:
    """ValueError naming the known types when a pattern matches none of them (``cos.jbo.*`` would never fire).

    Checked where subscribers are defined, not in `Filter`: one stored before this check must still load.
    """
    for pattern in types:
        if not fnmatch.filter(EVENT_TYPES, pattern):
            raise ValueError(f"event type {pattern!r} matches no event type; known types: {', '.join(EVENT_TYPES)}")
