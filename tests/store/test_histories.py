"""The filter histories a process keeps (`Histories`), shared by the SQLite writer's claims and its readers' pages of
deliveries: each caller answers with the histories it checked against its own keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from relay.domain.clock import utc_now
from relay.domain.filters import Filter
from relay.store import store_for
from relay.store.db import drive
from relay.store.ops.histories import HISTORY_KEY, Histories, history_key
from relay.store.sqlite import connection
from tests.store.test_event_log import spec


class Meanwhile(connection.SqliteDb):
    """A connection on which ``meanwhile`` runs while a read is under way: another thread's turn."""

    def __init__(self, conn: sqlite3.Connection, meanwhile: Callable[[], None]) -> None:
        super().__init__(conn)
        self._meanwhile = meanwhile

    async def fetch(self, sql: str, *args: object) -> list[sqlite3.Row]:
        self._meanwhile()
        return await super().fetch(sql, *args)


def test_a_history_another_thread_kept_while_this_caller_read_is_not_what_this_caller_answers(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    at = utc_now()
    with store_for(path) as store:
        one = store.add_subscriber(spec("one", ("cos.job.failed",)), at)
        two = store.add_subscriber(spec("two"), at)
    conn = connection.connect(path)
    try:
        read = conn.execute(f"SELECT s.id, {HISTORY_KEY} FROM subscribers s")  # noqa: S608 - the store's own columns
        keys = {row["id"]: history_key(row) for row in read.fetchall()}
        histories = Histories()
        drive(histories.of(connection.SqliteDb(conn), {one.id: keys[one.id]}))  # one's is kept

        def older_reader() -> None:  # a reader of an older snapshot keeps what it read of one
            histories._kept[one.id] = (("older",), [(0, Filter(("*",)))])

        found = drive(histories.of(Meanwhile(conn, older_reader), keys))  # reads two's, answers one's as checked
    finally:
        conn.close()
    assert [kept.types for _, kept in found[one.id]] == [("cos.job.failed",)]
    assert [kept.types for _, kept in found[two.id]] == [("*",)]
