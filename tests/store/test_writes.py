"""The store's write path: a write waits for the lock another client holds, then commits once."""

from __future__ import annotations

import asyncio
import threading
import time

from relay.store import store_for
from relay.store.records import Target
from tests.conftest import job_body, record
from tests.databases import count, locked


def test_a_write_waits_for_the_lock_another_client_holds_and_commits_once_it_is_free(database: Target) -> None:
    db = database
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with locked(db):  # as a second worker or the CLI would, mid-transaction
            holding.set()
            release.wait(10)

    with store_for(db) as store:
        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert holding.wait(10)
            threading.Timer(0.3, release.set).start()
            started = time.monotonic()
            [result] = asyncio.run(record(store, job_body(1)))  # a write through the store's writer
            waited = time.monotonic() - started
        finally:
            release.set()
            holder.join()
    assert result.outcome == "accepted"
    assert waited >= 0.25
    assert count(db, "callbacks") == 1
