"""The outbox gauges a scrape reads, the same on both backends: with the lazy outbox most deliveries have no row, and
the gauges count them from the cursors. What they say is what listing the deliveries says, for subscribers with and
without a filter, some with retry rows, some paused, some whose backlog was shed; a scrape's statements do not grow
with the subscribers whose filter takes everything, and a filtered subscriber's figures are read again only once
they are `owed.RECOUNT_AFTER` seconds old (and then only the events since, while nothing else of it changed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.subscribers import SubscriberState
from relay.store import Store, store_for
from relay.store.db import Db, Dialect, drive
from relay.store.ops import owed
from relay.store.postgres.connection import PostgresDb
from relay.store.records import Target
from relay.store.rows import Row
from relay.store.sqlite import connection
from tests.conftest import job_body, record
from tests.store.test_event_log import DELIVERED, FAILED, finish, logged, spec
from tests.store.test_queries import walk


def listed(store: Store, state: str) -> tuple[int, datetime | None]:
    """How many deliveries the listing shows in ``state``, and the oldest one's ``created_at``."""
    items = [item for page in walk(lambda at: store.list_deliveries(state=state, limit=7, cursor=at)) for item in page]
    return len(items), min((datetime.fromisoformat(item["created_at"]) for item in items), default=None)


def test_the_outbox_gauges_say_what_listing_the_deliveries_says(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(replace(spec("all"), max_in_flight=4), at)
        store.add_subscriber(replace(spec("all-too"), max_in_flight=3), at)
        store.add_subscriber(replace(spec("failures", ("cos.job.failed",)), max_in_flight=2), at)
        store.add_subscriber(spec("paused"), at)
        store.add_subscriber(spec("paused-failures", ("cos.job.failed",)), at)
        for name in ("paused", "paused-failures"):
            store.set_subscriber_state(name, SubscriberState.PAUSED, at)
        # Failures and successes: the filtered subscribers are owed some of the events.
        states = ["Failed"] * 4 + ["Success", "Failed"] * 6
        for number, state in enumerate(states):  # a second apart: the oldest is a given event
            asyncio.run(record(store, job_body(number, state), at=at + timedelta(seconds=number)))
        claims = asyncio.run(store.claim(at, LEASE_MARGIN, 20))
        assert {claim.subscriber for claim in claims} == {"all", "all-too", "failures"}
        # Some delivered, some failed (retry rows), the rest left in flight.
        finish(store, claims[0::3], DELIVERED, at)
        finish(store, claims[1::3], FAILED, at)
        asyncio.run(record(store, *(job_body(n, "Failed") for n in range(16, 19)), at=at + timedelta(seconds=20)))
        # Backlogs past 3 shed (4 at most): the paused subscribers', with a filter and without.
        assert {"paused", "paused-failures"} <= set(asyncio.run(store.drop_backlog(3, 4, at)))
        gauges = store.outbox_stats()["outbox"]
        for state in ("pending", "in_flight", "dropped"):
            count, oldest = listed(store, state)
            assert count > 0, state  # each state has deliveries of both kinds to agree on
            assert gauges[state][0] == count, state
            if state != "dropped":  # the gauge shows the age of unfinished deliveries only
                assert gauges[state][1] == oldest, state


class Counted:
    """A `Db` that counts the statements run through it."""

    def __init__(self, db: Db) -> None:
        self._db = db
        self.statements = 0

    @property
    def dialect(self) -> Dialect:
        return self._db.dialect

    async def execute(self, sql: str, *args: object) -> int:
        self.statements += 1
        return await self._db.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.statements += 1
        await self._db.executemany(sql, rows)

    async def fetch(self, sql: str, *args: object) -> Sequence[Row]:
        self.statements += 1
        return await self._db.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        self.statements += 1
        return await self._db.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: object) -> Any:
        self.statements += 1
        return await self._db.fetchval(sql, *args)


@contextlib.contextmanager
def scraping(database: Target) -> Iterator[Any]:
    """A function reading the outbox gauges' figures of the log with ``recounts`` straight from ``database``: what
    they are and how many statements that took."""
    if isinstance(database, Path):
        with contextlib.closing(connection.connect(database, create=False)) as conn:

            def on_sqlite(recounts: owed.Recounts) -> tuple[dict[str, Any], int]:
                counted = Counted(connection.SqliteDb(conn))
                return drive(owed.outbox(counted, recounts)), counted.statements

            yield on_sqlite
        return

    def on_postgres(recounts: owed.Recounts) -> tuple[dict[str, Any], int]:
        async def read() -> tuple[dict[str, Any], int]:
            conn = await asyncpg.connect(database.url)
            try:
                counted = Counted(PostgresDb(conn))
                return await owed.outbox(counted, recounts), counted.statements
            finally:
                await conn.close()

        return asyncio.run(read())

    yield on_postgres


def test_a_scrapes_statements_do_not_grow_with_subscribers_and_filtered_figures_are_reused_for_a_while(
    database: Target,
) -> None:
    at = utc_now()
    now = [0.0]
    recounts = owed.Recounts(clock=lambda: now[0])
    with store_for(database) as store, scraping(database) as scrape:
        store.add_subscriber(spec("hook-0"), at)
        asyncio.run(record(store, job_body(0), job_body(1), at=at))
        asyncio.run(store.claim(at, LEASE_MARGIN, 1))  # one in flight: every statement of the read runs
        few = scrape(recounts)
        for number in range(1, 20):
            store.add_subscriber(spec(f"hook-{number}"), at)
        asyncio.run(record(store, job_body(2), job_body(3), at=at))
        many = scrape(recounts)
        assert (few[0]["pending"][0], many[0]["pending"][0]) == (1, 1 + 2 * 20)
        assert many[1] == few[1]  # 20 subscribers read in as many statements as one
        for number in range(5):
            store.add_subscriber(spec(f"failures-{number}", ("cos.job.failed",)), at)
        asyncio.run(record(store, job_body(4, "Failed"), at=at))
        counted = scrape(recounts)
        assert counted[0]["pending"][0] == 1 + 3 * 20 + 5
        asyncio.run(record(store, job_body(5, "Failed"), at=at))
        now[0] += owed.RECOUNT_AFTER - 1
        reused = scrape(recounts)
        assert reused[1] == many[1]  # the filtered subscribers' figures were not read again
        assert reused[0]["pending"][0] == 1 + 4 * 20 + 5  # theirs as they were
        now[0] += 1
        again = scrape(recounts)
        assert again[0]["pending"][0] == 1 + 4 * 20 + 2 * 5
        # Nothing but the log's head moved for them (no claim, no row): their rows read once for all, then each one's
        # new events only.
        assert again[1] - many[1] == 1 + 5
        # A pending delivery of theirs made a row (retried by hand, say): that subscriber is counted again.
        failures = store.get_subscriber("failures-0")
        assert failures is not None
        newest = logged(database)[-1]
        assert store.materialise(failures.id, newest, at) is not None
        asyncio.run(record(store, job_body(6, "Failed"), at=at))
        now[0] += owed.RECOUNT_AFTER
        assert scrape(recounts)[0]["pending"][0] == 1 + 5 * 20 + 3 * 5 - 1
