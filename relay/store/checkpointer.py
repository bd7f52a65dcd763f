"""WAL checkpoints off the commit path.

SQLite's automatic checkpoint runs inside the commit that takes the WAL past its threshold: that
commit copies megabytes into the database file and syncs it, and every callback waiting on the
group commit waits with it (the ack p99 showed it). The writer's connection never checkpoints;
this thread does, on a connection of its own, every ``interval`` seconds. A PASSIVE checkpoint
never blocks the writer or a reader: it copies what no reader still needs and leaves the rest.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self, connect: Callable[[], sqlite3.Connection], *, interval: float = 1.0, name: str = "relay-checkpointer"
    ) -> None:
        self._connect = connect
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        self._conn = self._connect()
        self._thread.start()

    def stop(self) -> None:
        """Stop, after one last checkpoint (a short-lived process, such as the CLI, leaves no WAL behind)."""
        if self._thread.is_alive():
            self._stopping.set()
            self._thread.join()
        if self._conn is not None:
            self.checkpoint()
            self._conn.close()
            self._conn = None

    def checkpoint(self) -> None:
        assert self._conn is not None
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the next round tries again; the WAL only grows meanwhile
            logger.warning("WAL checkpoint failed: %s", exc, extra={"action": "checkpoint_failed"})

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval):
            self.checkpoint()
