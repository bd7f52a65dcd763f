"""How many connections one server process keeps open, and which one gives way when a new one arrives at the cap.

Every connection costs a file descriptor. Without a cap, a client holding as many sockets as it can exhausts
the descriptor limit, and from then on ``accept()`` fails for everyone, real callbacks included. With a cap
below the limit, a connection arriving at the cap displaces the one that has waited longest without a request
in progress (nginx reuses idle connections the same way): an attacker's sockets displace each other, while a
real request, whose head arrives in milliseconds, is served.
"""

from __future__ import annotations

import resource
from typing import Protocol

#: With no cap configured, at most this many connections per process (each costs memory as well as a descriptor).
AUTO_CAP_CEILING = 16_384
#: Descriptors kept for everything but incoming connections: the database, outgoing deliveries, a burst of
#: accepted sockets not yet displaced. Half the limit when the limit is small.
RESERVE = 512


class Displaceable(Protocol):
    def displace(self) -> None:
        """Close this connection now, to make room for a new one."""


class ConnectionCap:
    """The open connections of one server process, the ones that may give way in the order they started waiting."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the connection cap must be positive")
        self.limit = limit
        self._open: set[Displaceable] = set()
        #: Connections without a request in progress, longest waiting first (dicts keep insertion order).
        self._waiting: dict[Displaceable, None] = {}

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, connection: Displaceable) -> None:
        """Count a new connection (which waits for its first request head); at the cap, displace one."""
        self._open.add(connection)
        self.waiting(connection)
        if len(self._open) > self.limit:
            # The new connection itself is the last in line: it gives way only if no other one can.
            self._displace(next(iter(self._waiting)))

    def waiting(self, connection: Displaceable) -> None:
        """``connection`` has no request in progress (its head is coming, or it is idle): it may give way."""
        if connection in self._open:
            self._waiting.pop(connection, None)
            self._waiting[connection] = None

    def busy(self, connection: Displaceable) -> None:
        """``connection`` has a request in progress: it keeps its place."""
        self._waiting.pop(connection, None)

    def closed(self, connection: Displaceable) -> None:
        self._open.discard(connection)
        self._waiting.pop(connection, None)

    def _displace(self, connection: Displaceable) -> None:
        # Uncounted at once: its descriptor is released only on the next loop iteration.
        self.closed(connection)
        connection.displace()


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the soft limit now in force.

    Many systems start services with a soft limit of 1024 and a much higher hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft


def connection_cap(configured: int, open_files: int) -> int:
    """The cap on open connections: ``configured`` if set (not 0), otherwise derived from the descriptor limit."""
    if configured > 0:
        return configured
    reserve = min(RESERVE, open_files // 2)
    return max(1, min(AUTO_CAP_CEILING, open_files - reserve))
