"""The store's write path: waiting for another process's lock, and attempts recorded in batches."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from relay.app import utc_now
from relay.deliver.client import Attempt, Outcome
from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN, Recorder
from relay.outbox.filters import Filter
from relay.outbox.subscribers import SubscriberSpec
from relay.store import Store
from relay.store.records import Decision, Finished
from tests.conftest import ingest, job_body


def test_a_write_waits_for_the_lock_another_process_holds_and_commits_once_it_is_free(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    with Store(db, write_timeout=5.0) as store:
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # as a second worker or the CLI would, mid-transaction
        released = threading.Timer(0.3, other.execute, ("COMMIT",))
        released.start()
        try:
            value = store.secret("test", "stored", utc_now())  # a write through the writer thread
        finally:
            released.join()
            other.close()
    assert value == "stored"


def test_concurrent_attempts_are_recorded_in_fewer_transactions_each_with_its_own_result(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    lanes = 24
    with Store(db) as store:
        spec = SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter(), max_in_flight=lanes)
        store.add_subscriber(spec, utc_now())
    ingest(db, *(job_body(number) for number in range(lanes * 2)))
    transactions: list[float] = []
    with Store(db, observe=lambda seconds, error: transactions.append(seconds)) as store:

        async def attempt_all() -> list[int | None]:
            claims = await store.claim(utc_now(), LEASE_MARGIN, lanes)
            assert len(claims) == lanes
            recorder = Recorder(store, LEASE_MARGIN)
            delivered = Attempt(Outcome.SUCCESS, 204, 0.01, None, b"", None)
            transactions.clear()
            recorded = await asyncio.gather(
                *(
                    recorder.record(Finished(claim, delivered, Decision("delivered"), utc_now(), utc_now()))
                    for claim in claims
                )
            )
            assert len(transactions) < lanes  # batched: one write carried several attempts
            return [result.following.delivery_id if result.following else None for result in recorded]

        following = asyncio.run(attempt_all())
        # Each lane was handed the next delivery of the subscriber, and no two lanes the same one.
        assert None not in following
        assert len(set(following)) == lanes
        assert store.count_deliveries("delivered") == lanes
        assert store.count_deliveries("in_flight") == lanes
