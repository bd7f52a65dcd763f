"""Fan-out: which subscribers each event is owed to, matched against a snapshot of the subscribers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.domain.events import Event
from relay.domain.subscribers import Subscriber


@dataclass(frozen=True)
class Snapshot:
    """The subscribers as last read, and the store's version of them (to notice a change since)."""

    version: tuple[object, ...] | None
    subscribers: tuple[Subscriber, ...]


#: Before anything is read: a version no store has, so the first write asks for a real snapshot.
EMPTY = Snapshot(None, ())


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
