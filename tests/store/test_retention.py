"""Pruning where only PostgreSQL has the problem: replicas pruning the same database at once, a delivery an
operator requeues while a batch runs (the SQLite store's single writer orders both for free), and every step of
a batch and every console read planned through an index (schema step 3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import psycopg

from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.filters import Filter
from relay.domain.retention import Cutoffs, Pruned, Windows
from relay.domain.subscribers import SubscriberSpec
from relay.maintenance.pruning import Pruner
from relay.store import store_for
from relay.store.ops import console, queries, retention
from relay.store.postgres.connection import PostgresDb
from relay.store.postgres.store import PostgresStore
from relay.store.records import PostgresUrl
from tests.conftest import DATA, fresh_database, job_body, job_id, record
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
            # Both failed their first attempt for good: each is a row (dead), which the cursor passed.
            conn.execute(
                "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at,"
                " created_at, updated_at) SELECT e.id, s.id, 'dead', 1, 1, e.created_at, e.created_at, e.created_at"
                " FROM events e, subscribers s ORDER BY e.position"
            )
            assert asyncio.run(relay.claim(LONG_AGO, LEASE_MARGIN, 10)) == []
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


def test_ingest_goes_on_while_another_replica_holds_the_prune_lock(postgres: Cluster) -> None:
    url = fresh_database(postgres)
    with store_for(url) as relay, psycopg.connect(url.url) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (retention.PRUNE_LOCK,))  # a batch in progress there
        results = asyncio.run(asyncio.wait_for(record(relay, job_body(1), at=NOW), timeout=4))
        assert [result.outcome for result in results] == ["accepted"]
        assert relay.count_prunable(Cutoffs(raw=NOW + timedelta(seconds=1), jobs=None))["callbacks"] == 1


class Planned:
    """An asyncpg connection that asks PostgreSQL for its plan of each query before running it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.plans: list[tuple[str, str]] = []

    async def _explained(self, run: Callable[..., Awaitable[Any]], query: str, *args: Any) -> Any:
        if not query.startswith(("SELECT pg_advisory", "INSERT")):
            self.plans.append((query, str(await self.conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args))))
        return await run(query, *args)

    async def fetch(self, query: str, *args: Any) -> Any:
        return await self._explained(self.conn.fetch, query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._explained(self.conn.fetchval, query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._explained(self.conn.fetchrow, query, *args)

    async def execute(self, query: str, *args: Any) -> Any:
        return await self._explained(self.conn.execute, query, *args)


def test_every_step_of_a_prune_batch_and_every_console_read_is_planned_through_an_index(postgres: Cluster) -> None:
    url = fresh_database(postgres)
    with store_for(url) as relay:
        relay.add_subscriber(SubscriberSpec("hook", "http://192.0.2.1/hook", generate_secret(), Filter()), LONG_AGO)
        workflow = (DATA / "samples" / "workflow_finish_success.xml").read_bytes()
        asyncio.run(record(relay, *(job_body(n) for n in range(5)), workflow, at=LONG_AGO))
    rows(url, "UPDATE deliveries SET state = 'delivered' WHERE id % 2 = 0 RETURNING id")

    async def planned() -> list[tuple[str, str]]:
        conn = await asyncpg.connect(url.url)
        try:
            # Tables this small would be scanned whole whatever the indexes: forbid that, and any step without an
            # index it can use still shows a Seq Scan.
            await conn.execute("SET enable_seqscan = off")
            spy = Planned(conn)
            as_conn = cast(asyncpg.Connection, spy)
            transaction = conn.transaction()
            await transaction.start()
            await retention.prune_batch(PostgresDb(as_conn), Cutoffs(raw=NOW, jobs=NOW), 100, NOW, 0)
            await transaction.rollback()
            db = PostgresDb(as_conn)
            await console.job_callbacks(db, job_id(1), 64)
            await console.job_deliveries(db, job_id(1))
            await queries.job_history(db, job_id(1))
            await console.overview(db, "2019-12-31T23:00:00.000000Z", "2019-12-31T00:00:00.000000Z")
            await console.recent_states(db, [1, 2])
            await console.event_body(db, "nope")
            return spy.plans
        finally:
            await conn.close()

    plans = asyncio.run(planned())
    assert len(plans) >= 20  # every step ran: deliveries, callbacks, history, jobs, workflows, the console
    # A job's deliveries include those the event log implies, one per subscriber owed each event: the listing reads
    # every live subscriber's cursor (bounded by the configuration, not by traffic); nothing else is read whole.
    per_subscriber = {"Index Scan on cursors", "Index Scan on subscribers"}
    assert [
        (query, whole)
        for query, plan in plans
        if (whole := [scan for scan in unbounded(json.loads(plan)[0]["Plan"]) if scan not in per_subscriber])
    ] == []


def unbounded(node: dict[str, Any], limited: bool = False) -> list[str]:
    """The scans in a plan that read a whole table or index: a Seq Scan, or an index scan with no condition
    that no LIMIT above it bounds (the leading rows of a table in id order are taken that way, a batch at a time)."""
    kind = node["Node Type"]
    limited = limited or kind == "Limit"
    found = []
    if kind == "Seq Scan" or (kind.endswith("Index Scan") and "Index Cond" not in node and not limited):
        found.append(f"{kind} on {node.get('Relation Name') or node.get('Index Name')}")
    for child in node.get("Plans", []):
        found += unbounded(child, limited)
    return found
