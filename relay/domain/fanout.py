"""Fan-out: which subscribers each event is owed to. The log's cursors owe most events without it (the claim
matches each subscriber's filter); the rows of events held for a confirmation are made with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.domain.events import Event
from relay.domain.subscribers import Subscriber


@dataclass(frozen=True)
class Owed:
    """An event and the ids of the subscribers it is owed to: one delivery each."""

    event: Event
    subscriber_ids: tuple[int, ...]


def fan_out(events: Sequence[Event], subscribers: Sequence[Subscriber]) -> list[Owed]:
    """Each event with the subscribers whose filter matches it.

    Paused and disabled subscribers are owed deliveries too: they are held, not lost, until resumed.
    """
    return [
        Owed(event, tuple(s.id for s in subscribers if s.filter.everything or s.filter.matches(event)))
        for event in events
    ]
