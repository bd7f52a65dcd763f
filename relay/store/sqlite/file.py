"""What only a SQLite file has: its free pages, and consistent copies of the live file (pruning is
`relay.store.ops.retention`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def reusable_bytes(conn: sqlite3.Connection) -> int:
    """Free pages inside the file: space new rows take before the file grows."""
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(free) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def backup(conn: sqlite3.Connection, target: Path) -> None:
    """A consistent, compacted copy of the database as of one read snapshot (writers go on meanwhile).

    The copy has auto_vacuum=INCREMENTAL whatever the source has: VACUUM INTO builds it with the connection's
    setting, and asking for it on a file without auto-vacuum only records the wish (no lock, no change).
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("VACUUM INTO ?", (str(target),))
