"""WAL checkpoints on their own thread, so no callback's commit pays for one.

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000 pages: that commit
copies the WAL back into the database file and syncs it. A callback fanned out to 1,000 subscribers
writes a few hundred pages, so every few callbacks one waited for a checkpoint: in a profile, two
thirds of its commit time. The writer's connection turns the automatic checkpoint off, and this thread
runs the same PASSIVE checkpoint on its own connection every half second (it never blocks the writer
or readers, SQLite releases the GIL while it copies, and with nothing new in the WAL it costs nothing).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Seconds between checkpoints: the WAL holds at most about this long's writes beyond the database.
INTERVAL = 0.5


class Checkpointer:
    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str = "relay-checkpoint") -> None:
        self._connect = connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    def _loop(self) -> None:
        conn = self._connect()
        try:
            while not self._stop.wait(INTERVAL):
                self._checkpoint(conn)
            self._checkpoint(conn)  # leave little for the next start to replay
        finally:
            conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # busy with another process's checkpoint, say: try again later
            logger.warning("WAL checkpoint failed: %s", exc, extra={"action": "checkpoint_failed"})
