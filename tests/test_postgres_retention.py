"""Pruning where only PostgreSQL has the problem: replicas pruning the same database at once, and a delivery an
operator requeues while a batch runs (the SQLite store's single writer orders both for free)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg

from relay.deliver.signing import generate_secret
from relay.domain.filters import Filter
from relay.domain.retention import Cutoffs, Pruned, Windows
from relay.domain.subscribers import SubscriberSpec
from relay.pruning import Pruner
from relay.store import PostgresStore, store_for
from relay.store.records import PostgresUrl
from tests.conftest import fresh_database, job_body, record
from tests.databases import count, rows
from tests.postgres import Cluster

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def store(url: PostgresUrl) -> PostgresStore:
    opened = store_for(url)
    assert isinstance(opened, PostgresStore)
    opened.open()
    return opened


def test_replicas_pruning_at_once_remove_every_row_exactly_once(postgres: Cluster) -> None:
    url = fresh_database(postgres)
    replicas = [store(url), store(url)]
    try:
        asyncio.run(record(replicas[0], *(job_body(n) for n in range(40)), at=LONG_AGO))

        async def both() -> list[Pruned]:
            pruners = [Pruner(replica, Windows.of_seconds(0, 0), lambda: NOW, batch=3) for replica in replicas]
            return list(await asyncio.gather(*(pruner.prune() for pruner in pruners)))

        results = asyncio.run(both())
    finally:
        for replica in replicas:
            replica.close()
    totals = Pruned()
    for pruned in results:
        totals.add(pruned.counts)
    assert all(pruned.total for pruned in results)  # both took batches: neither waited the other out
    assert {kind: n for kind, n in totals.counts.items() if n} == {
        "callbacks": 40,
        "dedup_keys": 40,
        "events": 40,
        "jobs": 40,
        "job_states": 40,
    }
    assert [count(url, table) for table in ("callbacks", "items", "events", "jobs", "job_states")] == [0] * 5


def test_a_delivery_being_requeued_is_skipped_by_the_batch_without_waiting_and_stays(postgres: Cluster) -> None:
    url = fresh_database(postgres)
    with store_for(url) as relay:
        relay.add_subscriber(SubscriberSpec("hook", "http://192.0.2.1/hook", generate_secret(), Filter()), LONG_AGO)
        asyncio.run(record(relay, job_body(1), job_body(2), at=LONG_AGO))
        with psycopg.connect(url.url, autocommit=True) as conn:
            conn.execute("UPDATE deliveries SET state = 'dead'")
            (first,) = conn.execute("SELECT min(id) FROM deliveries").fetchone() or (None,)
            # An operator's requeue in progress: it holds the row until it commits the delivery as pending again.
            with conn.transaction():
                conn.execute("SELECT id FROM deliveries WHERE id = %s FOR UPDATE", (first,))
                cutoffs = Cutoffs(raw=NOW, jobs=None)
                counts = asyncio.run(asyncio.wait_for(relay.prune(cutoffs, 100, NOW, 0), timeout=10))
                conn.execute("UPDATE deliveries SET state = 'pending' WHERE id = %s", (first,))
        assert (counts["deliveries"], counts["callbacks"]) == (1, 2)
        assert rows(url, "SELECT id, state FROM deliveries") == [{"id": first, "state": "pending"}]
        assert count(url, "events") == 1  # the event the requeued delivery needs stays
        again = asyncio.run(relay.prune(Cutoffs(raw=NOW + timedelta(days=1), jobs=None), 100, NOW, 0))
        assert again["deliveries"] == 0  # owed now: never pruned
