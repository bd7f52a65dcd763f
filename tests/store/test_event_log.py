"""The event log of the lazy outbox (docs/design/lazy-outbox.md), the same on both backends: every event takes the
next position in commit order, with the attributes filters look at; a subscriber's cursor and filter start at
the log's head when it is added, a changed filter applies from the head at the change; a database made before
the log migrates and keeps every delivery it owed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import psycopg
import pytest

from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.delivery import Attempt, Claim, Decision, Finished, Outcome, decide, runs
from relay.domain.filters import Filter
from relay.domain.retention import Cutoffs
from relay.domain.retry import RetryPolicy
from relay.domain.subscribers import SubscriberSpec, SubscriberState
from relay.store import Store, store_for
from relay.store.formats import iso
from relay.store.ops import console, implied, owed, queries
from relay.store.ops.log import LOG_LOCK
from relay.store.records import PostgresUrl, Target
from relay.store.sqlite import connection
from tests.conftest import job_body, record
from tests.databases import rows, values


def spec(name: str, types: tuple[str, ...] = ("*",)) -> SubscriberSpec:
    return SubscriberSpec(name, f"http://127.0.0.1:9/{name}", generate_secret(), Filter(types))


def logged(db: Target) -> list[str]:
    """The ids of the events of the log, in its order."""
    return [row[0] for row in values(db, "SELECT id FROM events WHERE position IS NOT NULL ORDER BY position")]


def record_jobs(store: Store, count: int, at: datetime) -> None:
    """Callbacks of ``count`` jobs (0, 1, ...), each one event of the log, recorded at ``at``."""
    asyncio.run(record(store, *(job_body(number) for number in range(count)), at=at))


def positions(db: Target) -> list[tuple[str, int]]:
    return [
        (row[0], row[1])
        for row in values(db, "SELECT item_key, position FROM events WHERE position IS NOT NULL ORDER BY position")
    ]


def test_events_take_the_next_positions_in_the_order_they_commit_with_what_filters_look_at(
    database: Target,
) -> None:
    with store_for(database) as store:
        for number in range(3):
            asyncio.run(record(store, job_body(number)))
        asyncio.run(record(store, job_body(0)))  # a duplicate: no event, no position
    logged = positions(database)
    assert [position for _, position in logged] == [1, 2, 3]
    assert len({key for key, _ in logged}) == 3
    first = rows(database, "SELECT type, tag, state, queue_id, bucket FROM events WHERE position = 1")[0]
    assert first == {
        "type": "cos.job.succeeded",
        "tag": "Transcode",
        "state": "Success",
        "queue_id": "pe820cf648126910f305549c39b7b7183",
        "bucket": "examplebucket-1250000000",
    }


def test_a_subscriber_added_later_starts_at_the_head_of_the_log(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        early = store.add_subscriber(spec("early"), at)
        asyncio.run(record(store, job_body(0), job_body(1), at=at))
        late = store.add_subscriber(spec("late", ("cos.job.failed",)), at)
    cursors = values(database, "SELECT subscriber_id, acked, leased FROM cursors ORDER BY subscriber_id")
    assert cursors == [(early.id, 0, 0), (late.id, 2, 2)]
    assert values(database, "SELECT subscriber_id, from_position, types FROM filters ORDER BY subscriber_id") == [
        (early.id, 0, '["*"]'),
        (late.id, 2, '["cos.job.failed"]'),
    ]


def test_a_changed_filter_applies_from_the_head_of_the_log_at_the_change(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        asyncio.run(record(store, job_body(0), at=at))
        store.update_subscriber("hook", {"types": ("cos.job.failed",)}, at)
        store.update_subscriber("hook", {"filters": {"tag": "Transcode"}}, at)  # the same head: replaces it
        store.update_subscriber("hook", {"max_in_flight": 3}, at)  # not a filter: no history
        asyncio.run(record(store, job_body(1), at=at))
        store.update_subscriber("hook", {"types": ("*",), "filters": {}}, at)
    history = values(database, "SELECT from_position, types, filters FROM filters WHERE subscriber_id = ?", hook.id)
    assert sorted(history) == [
        (0, '["*"]', "{}"),
        (1, '["cos.job.failed"]', '{"tag":"Transcode"}'),
        (2, '["*"]', "{}"),
    ]


def test_a_deliveries_page_reads_a_filter_changed_since_the_last_page(database: Target) -> None:
    """Pages keep the filters they parsed (at 1,000 subscribers, parsing them all was half a page): a change, even one
    that replaces the last filter at the same head, is read again."""
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(spec("hook"), at)
        record_jobs(store, 2, at)
        assert len(store.list_deliveries(state="pending").items) == 2
        store.update_subscriber("hook", {"types": ("cos.job.failed",)}, at)  # from the head on: the two still owed
        asyncio.run(record(store, job_body(2), at=at))
        assert len(store.list_deliveries(state="pending").items) == 2
        store.update_subscriber("hook", {"types": ("*",)}, at)  # from the next head on
        store.update_subscriber("hook", {"types": ("cos.job.failed",)}, at)  # the same head: replaces it
        asyncio.run(record(store, job_body(3), at=at))
        assert len(store.list_deliveries(state="pending").items) == 2
        store.update_subscriber("hook", {"types": ("*",)}, at)
        asyncio.run(record(store, job_body(4), at=at))
        assert len(store.list_deliveries(state="pending").items) == 3


def test_positions_follow_commit_order_across_two_writers(database: Target) -> None:
    """A writer holding the log (PostgreSQL: another replica between its events' insert and its commit) makes the
    next one wait: the later commit always has the later position, so no reader sees a hole filled after."""
    if not isinstance(database, PostgresUrl):
        pytest.skip("SQLite has one writer at a time: its commit order is its order of writing")
    with store_for(database) as store:
        asyncio.run(record(store, job_body(0)))
        with psycopg.connect(database.url) as other:
            other.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
            writer = threading.Thread(target=lambda: asyncio.run(record(store, job_body(1))))
            writer.start()
            with psycopg.connect(database.url) as watcher:
                while not watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()[0]:  # type: ignore[index]
                    assert writer.is_alive()
            other.execute(
                "INSERT INTO events(id, item_key, type, callback_id, created_at, position)"
                " SELECT 'other', 'other', 'cos.job.succeeded', 1, '', max(position) + 1 FROM events"
            )
            other.commit()
            writer.join()
    logged = positions(database)
    assert [position for _, position in logged] == [1, 2, 3]
    assert logged[1][0] == "other"  # committed first, so before the writer that waited for it


def as_before_m017(db: Target) -> None:
    """Take the event log away as the release before it had none, so that the next open migrates."""
    steps = [
        "DROP INDEX events_by_position",
        *(
            f"ALTER TABLE events DROP COLUMN {c}"
            for c in ("position", "tag", "state", "queue_id", "bucket", "object_key")
        ),
        "DROP TABLE cursors",
        "DROP TABLE filters",
        "DROP TABLE gaps",
        "DROP TABLE leases",
        "DROP TABLE log_floor",
        "DROP INDEX attempts_of_the_log",
        "DROP INDEX attempts_of_the_log_by_age",
        "ALTER TABLE attempts DROP COLUMN subscriber_id",
        "ALTER TABLE attempts DROP COLUMN event_id",
        "ALTER TABLE attempts DROP COLUMN position",
    ]
    _undo(db, steps, "m017_event_log", 17)
    _undo(db, [], "m018_attempts_by_position", 18)
    _undo(db, [], "m019_handed_back_leases", 19)  # m017 makes the leases again, without the column


def as_before_m018(db: Target) -> None:
    """Find the attempts of the log by event id again, as the release before did, so that the next open migrates."""
    steps = [
        "DROP INDEX attempts_of_the_log",
        "ALTER TABLE attempts DROP COLUMN position",
        "CREATE INDEX attempts_of_the_log ON attempts(event_id, subscriber_id) WHERE delivery_id IS NULL",
        *(
            (
                "DROP INDEX idx_attempts_delivery_id_id",
                "CREATE INDEX idx_attempts_delivery_id_id ON attempts(delivery_id, id)",
            )
            if isinstance(db, Path)
            else ("DROP INDEX attempts_delivery", "CREATE INDEX attempts_delivery ON attempts(delivery_id, id)")
        ),
    ]
    _undo(db, steps, "m018_attempts_by_position", 18)


def as_before_m019(db: Target) -> None:
    """Take away the leases' handed-back flag, as the release before had none, so that the next open migrates."""
    _undo(db, ["ALTER TABLE leases DROP COLUMN handed_back"], "m019_handed_back_leases", 19)


def _undo(db: Target, steps: list[str], name: str, version: int) -> None:
    """Run ``steps``, then forget the migration (``name`` in the SQLite file, ``version`` on PostgreSQL)."""
    if isinstance(db, Path):
        with sqlite3.connect(db) as file:
            for step in steps:
                file.execute(step)
            file.execute("DELETE FROM _sqlite_migrations WHERE name = ?", (name,))
        return
    with psycopg.connect(db.url) as server:
        for step in steps:
            server.execute(step.encode())
        server.execute(b"DELETE FROM relay_migrations WHERE version = %s", (version,))


def test_the_attempts_of_the_log_made_before_m018_are_found_by_position_and_pruned_with_their_events(
    database: Target,
) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        record_jobs(store, 3, at)
        claims = asyncio.run(store.claim(at, LEASE_MARGIN, 100))
        assert finish(store, claims, DELIVERED, at) == []
    as_before_m018(database)
    with store_for(database) as store:  # migrates
        assert values(database, "SELECT count(*) FROM attempts WHERE position IS NULL") == [(0,)]
        for claim in claims:
            found = store.delivery_of(hook.id, claim.event_id)
            assert found is not None
            assert (found["state"], [attempt["status"] for attempt in found["attempts_log"]]) == ("delivered", [204])
        later = at + timedelta(days=30)
        removed = asyncio.run(store.prune(Cutoffs(raw=later, jobs=None), 100, later, 0))
    assert (removed["events"], removed["attempts"]) == (3, 3)
    assert values(database, "SELECT count(*) FROM attempts") == [(0,)]


def test_ranges_out_before_m019_are_taken_over_as_retries_and_one_handed_back_after_it_as_first_attempts(
    database: Target,
) -> None:
    """Before m019 a range handed back could not be told from one whose worker died: both stay retries."""
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(replace(spec("hook"), max_in_flight=2), at)
        record_jobs(store, 2, at)
        out, given = asyncio.run(store.claim(at, LEASE_MARGIN, 2))
        asyncio.run(store.release(given, at))
    as_before_m019(database)
    with store_for(database) as store:  # migrates
        later = at + timedelta(seconds=given.timeout) + LEASE_MARGIN
        taken = asyncio.run(store.claim(later, LEASE_MARGIN, 2))
        assert sorted((claim.event_id, claim.trigger) for claim in taken) == sorted(
            [(out.event_id, "retry"), (given.event_id, "retry")]
        )
        asyncio.run(store.release(taken[0], later))
        [again] = asyncio.run(store.claim(later, LEASE_MARGIN, 1))
    assert (again.event_id, again.trigger) == (taken[0].event_id, "first")


def test_a_database_made_before_migrates_and_keeps_every_owed_delivery(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        other = store.add_subscriber(spec("other"), at)
        record_jobs(store, 6, at)
        gone = store.add_subscriber(spec("gone"), at)
        store.remove_subscriber("gone", at)
    # Today's release wrote a pending row per subscriber and event.
    _write(
        database,
        "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at, created_at,"
        " updated_at) SELECT e.id, s.id, 'pending', 0, 0, e.created_at, e.created_at, e.created_at"
        " FROM events e, subscribers s WHERE s.removed_at IS NULL ORDER BY s.id, e.position",
    )
    ids = [row[0] for row in values(database, "SELECT id FROM deliveries WHERE subscriber_id = ? ORDER BY id", hook.id)]
    # Today's states: two pending, one in flight whose worker died, one dead, one dropped, one confirming.
    for delivery_id, state in zip(ids[2:], ("in_flight", "dead", "dropped", "confirming"), strict=True):
        _set_state(database, delivery_id, state, at - timedelta(hours=1))
    as_before_m017(database)
    with store_for(database) as store:  # migrates
        assert values(database, "SELECT subscriber_id, acked, leased FROM cursors ORDER BY subscriber_id") == [
            (hook.id, 0, 0),
            (other.id, 0, 0),
        ]
        assert values(database, "SELECT count(*) FROM filters WHERE from_position = 0") == [(2,)]
        assert values(database, "SELECT count(*) FROM events WHERE position IS NULL") == [(6,)]
        claimed = asyncio.run(store.claim(at, LEASE_MARGIN, 100))
        again = asyncio.run(store.claim(at, LEASE_MARGIN, 100))
        asyncio.run(record(store, job_body(6), at=at))
    mine = [claim.delivery_id for claim in claimed if claim.subscriber_id == hook.id]
    assert sorted(mine) == ids[:3]  # type: ignore[type-var]  # pending and the expired lease: each once (rows)
    assert len([claim for claim in claimed if claim.subscriber_id == other.id]) == 6
    assert again == []
    states = dict(values(database, "SELECT id, state FROM deliveries WHERE subscriber_id = ?", hook.id))
    assert [states[i] for i in ids[3:]] == ["dead", "dropped", "confirming"]
    assert gone.id not in {row[0] for row in values(database, "SELECT subscriber_id FROM cursors")}
    assert positions(database)[-1][1] == 1  # the log starts after the migration


def _set_state(db: Target, delivery_id: int, state: str, lease_expired_at: datetime) -> None:
    _write(
        db,
        "UPDATE deliveries SET state = ?, lease_expires_at = ? WHERE id = ?",
        state,
        iso(lease_expired_at),
        delivery_id,
    )


def _write(db: Target, statement: str, *params: object) -> None:
    """``statement`` (``?`` for each of ``params``) on a connection of its own, committed."""
    if isinstance(db, Path):
        with sqlite3.connect(db) as file:
            file.execute(statement, params)
        return
    with psycopg.connect(db.url) as server:
        server.execute(statement.replace("?", "%s").encode(), params or None)


# -- claims from the log: rows only for exceptions ------------------------------------------------------------------

DELIVERED = Attempt(Outcome.SUCCESS, 204, 0.01, None, b"", None)
FAILED = Attempt(Outcome.HTTP_5XX, 503, 0.01, None, b"", None)


def finish(store: Store, claims: list[Claim], attempt: Attempt, at: datetime) -> list[Claim]:
    """Record ``attempt`` for each of ``claims``; the next deliveries the lanes were handed (their runs, in order)."""

    def decision(claim: Claim) -> Decision:
        return decide(claim, attempt, at, RetryPolicy((60.0,), 0.0), timedelta(days=5), lambda: 0.5)

    batch = [Finished(claim, attempt, decision(claim), at, at) for claim in claims]
    return [claim for r in asyncio.run(store.finish(batch, LEASE_MARGIN)) for claim in r.following]


def cursor(db: Target, subscriber_id: int) -> tuple[int, int]:
    [(acked, leased)] = values(db, "SELECT acked, leased FROM cursors WHERE subscriber_id = ?", subscriber_id)
    return acked, leased


def test_a_callback_writes_no_row_per_subscriber(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(spec("one"), at)
        asyncio.run(record(store, job_body(0), at=at))
        assert values(database, "SELECT count(*) FROM deliveries") == [(0,)]
        for number in range(100):
            store.add_subscriber(spec(f"hook-{number}"), at)
        [result] = asyncio.run(record(store, job_body(1), at=at))
        assert result.events == 1
        # Owed through the cursors: the first callback's once, the second's to all 101.
        assert store.count_deliveries("pending") == 1 + 101
    assert values(database, "SELECT count(*) FROM deliveries") == [(0,)]


def test_a_claim_passes_non_matching_events_and_leases_the_next_matching(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        failures = store.add_subscriber(spec("failures", ("cos.job.failed",)), at)
        states = ("Success", "Failed", "Success", "Failed", "Success")
        asyncio.run(record(store, *(job_body(n, state) for n, state in enumerate(states)), at=at))
        claims = asyncio.run(store.claim(at, LEASE_MARGIN, 10))
        assert [claim.delivery_id for claim in claims] == [None, None]
        assert [claim.event_id for claim in claims] == [logged(database)[1], logged(database)[3]]
        assert cursor(database, failures.id) == (0, 5)  # the last one read was passed for free
        finish(store, claims, DELIVERED, at)
        assert cursor(database, failures.id) == (5, 5)
        assert asyncio.run(store.claim(at, LEASE_MARGIN, 10)) == []
        assert asyncio.run(store.next_due()) is None
    assert values(database, "SELECT count(*) FROM deliveries") == [(0,)]
    assert values(
        database, "SELECT count(*) FROM attempts WHERE delivery_id IS NULL AND subscriber_id = ?", failures.id
    ) == [(2,)]


def test_a_failed_first_attempt_becomes_a_retrying_row_and_the_cursor_passes_it(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        asyncio.run(record(store, job_body(0), job_body(1), at=at))
        first, second = asyncio.run(store.claim(at, LEASE_MARGIN, 10))
        finish(store, [first], DELIVERED, at)
        assert cursor(database, hook.id) == (1, 2)  # each lane has a range of its own: the second's is still out
        finish(store, [second], FAILED, at)
        assert cursor(database, hook.id) == (2, 2)
        [row] = store.list_deliveries(state="pending").items
        assert (row["event_id"], row["failures"], row["attempts"]) == (second.event_id, 1, 1)
        assert row["id"] is not None  # a row now
        delivery = store.get_delivery(row["id"])
        assert delivery is not None
        assert [attempt["outcome"] for attempt in delivery["attempts_log"]] == ["http_5xx"]
        assert asyncio.run(store.claim(at, LEASE_MARGIN, 10)) == []  # its retry is due in a minute
        [retry] = asyncio.run(store.claim(at + timedelta(seconds=61), LEASE_MARGIN, 10))
    assert (retry.delivery_id, retry.event_id, retry.trigger) == (row["id"], second.event_id, "retry")


def test_an_expired_range_is_taken_over_alone_and_a_later_range_finished_meanwhile_is_not_sent_again(
    database: Target,
) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        record_jobs(store, 4, at)
        first = asyncio.run(store.claim(at, LEASE_MARGIN, 2))
        second = asyncio.run(store.claim(at, LEASE_MARGIN, 2))
        finish(store, second, DELIVERED, at)  # a later range finished: acked waits for the first
        assert cursor(database, hook.id) == (0, 4)
        assert asyncio.run(store.claim(at, LEASE_MARGIN, 10)) == []
        later = at + timedelta(seconds=hook.timeout) + LEASE_MARGIN
        again = asyncio.run(store.claim(later, LEASE_MARGIN, 10))
        finish(store, first, DELIVERED, later)  # the worker that died comes back: its lease is gone, nothing moves
        assert cursor(database, hook.id) == (0, 4)
        finish(store, again, DELIVERED, later)
        assert cursor(database, hook.id) == (4, 4)
    assert [claim.event_id for claim in again] == [claim.event_id for claim in first]


def test_a_range_another_worker_still_holds_is_not_taken_over_with_an_expired_one(database: Target) -> None:
    """A replica killed under load: only its own ranges are sent again, not the survivors' (bounded duplicates)."""
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        record_jobs(store, 6, at)
        dead = asyncio.run(store.claim(at, LEASE_MARGIN, 2))
        alive = asyncio.run(store.claim(at + timedelta(seconds=hook.timeout), LEASE_MARGIN, 2))
        later = at + timedelta(seconds=hook.timeout) + LEASE_MARGIN
        again = asyncio.run(store.claim(later, LEASE_MARGIN, 2))
        assert [claim.event_id for claim in again] == [claim.event_id for claim in dead]
        # Each finish hands its lanes their next events: the rest of the log, once.
        rest = finish(store, alive, DELIVERED, later) + finish(store, again, DELIVERED, later)
        rest += asyncio.run(store.claim(later, LEASE_MARGIN, 10))
        finish(store, rest, DELIVERED, later)
        assert cursor(database, hook.id) == (6, 6)
    assert len({claim.event_id for claim in dead + alive + rest}) == 6 == len(dead + alive + rest)


def test_a_finish_waiting_for_a_claim_of_the_next_range_leaves_acked_before_that_range(database: Target) -> None:
    """PostgreSQL: another worker's claim leases the next range while a finish ends the range before it. Whichever
    commits first, ``acked`` stops at the claim's range (were it passed, retention would prune events still out)."""
    if not isinstance(database, PostgresUrl):
        pytest.skip("SQLite has one writer at a time: a claim and a finish never overlap")
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        record_jobs(store, 4, at)
        first = asyncio.run(store.claim(at, LEASE_MARGIN, 2))
        with psycopg.connect(database.url) as other:  # the other worker's claim, in the middle of its transaction
            other.execute(
                "INSERT INTO leases(token, subscriber_id, after_position, last_position, outstanding, expires_at)"
                " VALUES ('next', %s, 2, 4, 2, %s)",
                (hook.id, iso(at + timedelta(minutes=5))),
            )
            other.execute("UPDATE cursors SET leased = 4 WHERE subscriber_id = %s", (hook.id,))
            finisher = threading.Thread(target=finish, args=(store, first, DELIVERED, at))
            finisher.start()
            with psycopg.connect(database.url, autocommit=True) as watcher:
                while not watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:  # type: ignore[index]
                    assert finisher.is_alive()
            other.commit()
            finisher.join()
        assert cursor(database, hook.id) == (2, 4)


def test_a_released_log_claim_is_due_again_at_once(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(spec("hook"), at)
        asyncio.run(record(store, job_body(0), at=at))
        [claim] = asyncio.run(store.claim(at, LEASE_MARGIN, 1))
        asyncio.run(store.release(claim, at))
        due = asyncio.run(store.next_due())
        assert due is not None
        assert due <= at
        [again] = asyncio.run(store.claim(at, LEASE_MARGIN, 1))
    # Handed back unattempted: its next attempt is its first, not a retry of one that never was.
    assert (again.event_id, again.trigger) == (claim.event_id, "first")


def test_strict_order_holds_across_a_retry_row_and_the_log(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(replace(spec("strict"), max_in_flight=1), at)
        asyncio.run(record(store, job_body(0), job_body(1), at=at))
        [first] = asyncio.run(store.claim(at, LEASE_MARGIN, 10))
        assert finish(store, [first], FAILED, at) == []  # its retry holds the log back
        assert asyncio.run(store.claim(at, LEASE_MARGIN, 10)) == []
        later = at + timedelta(seconds=61)
        [retry] = asyncio.run(store.claim(later, LEASE_MARGIN, 10))
        [second] = finish(store, [retry], DELIVERED, later)
    assert (retry.event_id, retry.delivery_id is not None) == (first.event_id, True)
    assert (second.event_id, second.delivery_id) == (logged(database)[1], None)


def test_two_replicas_never_lease_the_same_range(database: Target) -> None:
    if not isinstance(database, PostgresUrl):
        pytest.skip("SQLite has one writer at a time")
    at = utc_now()
    with store_for(database) as store:
        for number in range(3):
            store.add_subscriber(spec(f"hook-{number}"), at)
        record_jobs(store, 20, at)
    with store_for(database) as one, store_for(database) as two:

        async def both() -> list[list[Claim]]:
            return list(await asyncio.gather(*(s.claim(at, LEASE_MARGIN, 100) for s in (one, two, one, two))))

        claims = [claim for batch in asyncio.run(both()) for claim in batch]
    pairs = [(claim.subscriber_id, claim.event_id) for claim in claims]
    assert len(pairs) == len(set(pairs)) == 3 * 8  # each subscriber's in-flight limit, never a pair twice


def test_retention_never_passes_the_slowest_cursor(database: Target) -> None:
    at = utc_now()
    everything = Cutoffs(raw=at + timedelta(days=1), jobs=None)
    with store_for(database) as store:
        store.add_subscriber(spec("fast"), at)
        store.add_subscriber(spec("held"), at)
        store.set_subscriber_state("held", SubscriberState.PAUSED, at)
        record_jobs(store, 3, at)
        finish(store, asyncio.run(store.claim(at, LEASE_MARGIN, 10)), DELIVERED, at)
        while any(asyncio.run(store.prune(everything, 100, at, 0)).values()):
            pass
        assert len(positions(database)) == 3  # the paused one is owed them all
        store.remove_subscriber("held", at)
        while any(asyncio.run(store.prune(everything, 100, at, 0)).values()):
            pass
    assert positions(database) == []
    assert values(database, "SELECT count(*) FROM attempts") == [(0,)]  # the deliveries' in order went with them
    with store_for(database) as store:
        asyncio.run(record(store, job_body(3), at=at))
    assert [p for _, p in positions(database)] == [4]  # the log's head never goes back


# -- claims of many subscribers at once, and the filter histories a process keeps -----------------------------------


def by_subscriber(claims: list[Claim]) -> dict[int, list[tuple[str, int | None]]]:
    """Each subscriber's claims as (event id, delivery row id), in the order the claim gave them."""
    found: dict[int, list[tuple[str, int | None]]] = {}
    for claim in claims:
        found.setdefault(claim.subscriber_id, []).append((claim.event_id, claim.delivery_id))
    return found


def test_one_claim_leases_each_subscriber_its_own_owed_events_from_one_read_of_the_log(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        everything = store.add_subscriber(spec("everything"), at)
        failures = store.add_subscriber(spec("failures", ("cos.job.failed",)), at)
        rowed = store.add_subscriber(spec("rowed"), at)
        states = ("Success", "Failed", "Success", "Failed")
        asyncio.run(record(store, *(job_body(n, state) for n, state in enumerate(states[:2])), at=at))
        late = store.add_subscriber(spec("late"), at)
        asyncio.run(record(store, *(job_body(n + 2, state) for n, state in enumerate(states[2:])), at=at))
        events = logged(database)
        # An operator's action on the first event for one subscriber: a row now, claimed as a row, not from the log.
        row = store.materialise(rowed.id, events[0], at)
        claims = by_subscriber(asyncio.run(store.claim(at, LEASE_MARGIN, 100)))
        assert claims == {
            everything.id: [(event, None) for event in events],
            failures.id: [(events[1], None), (events[3], None)],
            rowed.id: [(events[0], row)] + [(event, None) for event in events[1:]],
            late.id: [(events[2], None), (events[3], None)],
        }
        assert {cursor(database, each.id) for each in (everything, failures, rowed, late)} == {(0, 4), (2, 4)}
        assert asyncio.run(store.claim(at, LEASE_MARGIN, 100)) == []


def test_a_claim_inflates_each_events_body_once_and_every_subscriber_taking_it_shares_the_bytes(
    database: Target,
) -> None:
    """At 1,000 subscribers, an event inflated per claim cost a thousand inflates and a thousand copies."""
    at = utc_now()
    with store_for(database) as store:
        subscribers = [store.add_subscriber(spec(f"s{n}"), at) for n in range(4)]
        record_jobs(store, 2, at)
        events = logged(database)
        store.materialise(subscribers[0].id, events[0], at)  # one claimed as a row, the others from the log
        claims = asyncio.run(store.claim(at, LEASE_MARGIN, 100))
        stored = {event: store.event_body(event) for event in events}
    assert len(claims) == 8
    for event in events:
        bodies = [claim.body for claim in claims if claim.event_id == event]
        assert len(bodies) == 4
        assert len({id(body) for body in bodies}) == 1
        assert bodies[0] == stored[event]


def test_room_a_subscriber_leaves_in_a_claim_goes_to_the_next_one(database: Target) -> None:
    """A subscriber whose next events all pass its filter takes none of the room it was given: the same claim gives
    that room to the subscribers after it, or the worker would find nothing and sleep with work due."""
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(replace(spec("a-failures", ("cos.job.failed",)), max_in_flight=2), at)
        hook = store.add_subscriber(spec("b-hook"), at)
        asyncio.run(record(store, job_body(0), job_body(1), at=at))
        claims = asyncio.run(store.claim(at, LEASE_MARGIN, 2))
    assert [(claim.subscriber_id, claim.event_id) for claim in claims] == [(hook.id, e) for e in logged(database)]


def test_a_batch_finishing_ranges_of_several_subscribers_moves_each_cursor_to_its_first_range_out(
    database: Target,
) -> None:
    at = utc_now()
    with store_for(database) as store:
        one, two = store.add_subscriber(spec("one"), at), store.add_subscriber(spec("two"), at)
        record_jobs(store, 4, at)
        # Two lanes a claim, a range of one event each: one's (0, 1] to (3, 4], then two's.
        claims = [claim for _ in range(4) for claim in asyncio.run(store.claim(at, LEASE_MARGIN, 2))]
        ones = [claim for claim in claims if claim.subscriber_id == one.id]
        twos = [claim for claim in claims if claim.subscriber_id == two.id]
        assert len(ones) == len(twos) == 4
        assert values(database, "SELECT count(*) FROM leases") == [(8,)]
        # One batch: one's first three ranges; two's last two only.
        finish(store, ones[:3] + twos[2:], DELIVERED, at)
        assert (cursor(database, one.id), cursor(database, two.id)) == ((3, 4), (0, 4))
        finish(store, ones[3:] + twos[:2], DELIVERED, at)
        assert (cursor(database, one.id), cursor(database, two.id)) == ((4, 4), (4, 4))
    assert values(database, "SELECT count(*) FROM leases") == [(0,)]


def test_a_filter_changed_by_another_process_applies_to_the_next_claim_of_one_that_read_the_old_filter(
    database: Target,
) -> None:
    """The claiming process keeps each filter history it read; another process (a CLI, another replica) changing
    the filter, even twice at the same head of the log, must reach its next claim."""
    at = utc_now()
    with store_for(database) as worker, store_for(database) as operator:
        hook = operator.add_subscriber(replace(spec("hook"), max_in_flight=1), at)
        asyncio.run(record(operator, job_body(0), job_body(1), at=at))
        [first] = asyncio.run(worker.claim(at, LEASE_MARGIN, 10))  # the history read: everything from 0
        operator.update_subscriber("hook", {"types": ("cos.job.failed",)}, at)  # from the head: 2
        [second] = finish(worker, [first], DELIVERED, at)  # the history read again: failures from 2
        operator.update_subscriber("hook", {"types": ("cos.job.succeeded",)}, at)  # the same head: replaces it
        asyncio.run(record(operator, job_body(2, "Failed"), job_body(3), at=at))
        [third] = finish(worker, [second], DELIVERED, at)
        assert finish(worker, [third], DELIVERED, at) == []
    events = logged(database)
    assert [first.event_id, second.event_id, third.event_id] == [events[0], events[1], events[3]]
    assert cursor(database, hook.id) == (4, 4)


def runs_of(claims: list[Claim]) -> list[list[str]]:
    """The claims' event ids, a list per lane's run."""
    return [[claim.event_id for claim in lane] for lane in runs(claims)]


def test_a_lane_takes_a_run_of_events_under_a_lease_of_its_own_and_the_in_flight_limit_counts_lanes(
    database: Target,
) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(replace(spec("hook"), max_in_flight=2), at)
        strict = store.add_subscriber(replace(spec("strict"), max_in_flight=1), at)
        record_jobs(store, 10, at)
        events = logged(database)
        claims = asyncio.run(store.claim(at, LEASE_MARGIN, 10, run=4))
        hooks = [claim for claim in claims if claim.subscriber_id == hook.id]
        assert runs_of(hooks) == [events[0:4], events[4:8]]  # two lanes, four events each
        assert runs_of([claim for claim in claims if claim.subscriber_id == strict.id]) == [events[0:1]]
        assert values(database, "SELECT count(*) FROM leases WHERE subscriber_id = ?", hook.id) == [(2,)]
        assert asyncio.run(store.claim(at, LEASE_MARGIN, 10, run=4)) == []  # both at their limit, in lanes
        # A short backlog goes out in parallel: as many lanes as events, up to the limit.
        fresh = store.add_subscriber(replace(spec("fresh"), max_in_flight=8), at)
        asyncio.run(record(store, job_body(10), job_body(11), at=at))
        claims = asyncio.run(store.claim(at, LEASE_MARGIN, 10, run=4))
    assert runs_of([claim for claim in claims if claim.subscriber_id == fresh.id]) == [
        [e] for e in logged(database)[10:]
    ]


def test_a_run_finished_in_part_moves_its_lease_past_what_was_sent_so_a_take_over_sends_only_the_rest(
    database: Target,
) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(replace(spec("hook"), max_in_flight=2, timeout=1.0), at)
        record_jobs(store, 4, at)
        events = logged(database)
        [lane] = runs(asyncio.run(store.claim(at, LEASE_MARGIN, 1, run=4)))
        assert [claim.event_id for claim in lane] == events
        # The lane sends two and records them (not the last of its run: no next run), then its worker dies.
        batch = [Finished(claim, DELIVERED, Decision("delivered"), at, at, last=False) for claim in lane[:2]]
        assert [r.following for r in asyncio.run(store.finish(batch, LEASE_MARGIN, 4))] == [(), ()]
        assert cursor(database, hook.id) == (2, 4)
        later = at + timedelta(seconds=1) + LEASE_MARGIN
        taken = asyncio.run(store.claim(later, LEASE_MARGIN, 1, run=4))
    assert [(claim.event_id, claim.trigger) for claim in taken] == [(events[2], "retry"), (events[3], "retry")]


def test_a_lane_that_stops_its_run_at_a_failure_gives_the_rest_back_to_the_next_claim(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(replace(spec("hook"), max_in_flight=2), at)
        record_jobs(store, 4, at)
        events = logged(database)
        [lane] = runs(asyncio.run(store.claim(at, LEASE_MARGIN, 1, run=4)))
        retry = Decision("pending", at + timedelta(minutes=1))
        batch = [
            Finished(lane[0], DELIVERED, Decision("delivered"), at, at, last=False),
            Finished(lane[1], FAILED, retry, at, at, gives_back=True),
        ]
        first, stopped = asyncio.run(store.finish(batch, LEASE_MARGIN, 4))
        # The failure's lane is handed the rest at once: the events after the failed one, not the delivered one, as
        # first attempts (never sent).
        assert first.following == ()
        assert [(claim.event_id, claim.trigger) for claim in stopped.following] == [(e, "first") for e in events[2:]]
        assert cursor(database, hook.id) == (2, 4)
        [row] = store.list_deliveries(state="pending").items
    assert (row["event_id"], row["id"] is not None) == (events[1], True)


def test_every_read_of_the_logs_attempts_goes_through_the_logs_indexes_never_the_delivery_ids(
    database: Target, sqlite_only: None
) -> None:
    # Before m018, SQLite answered "delivery_id IS NULL" through the delivery id index, reading every attempt of the
    # log for one page of deliveries (129 ms at half a million attempts: python -m bench.attempts_index).
    assert isinstance(database, Path)
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        record_jobs(store, 4, at)
        claims = asyncio.run(store.claim(at, LEASE_MARGIN, 100))
        finish(store, claims[:3], DELIVERED, at)
        finish(store, claims[3:], FAILED, at)
    statements: list[str] = []
    with sqlite3.connect(database) as conn:
        conn.row_factory = sqlite3.Row
        conn.set_trace_callback(statements.append)
        for operation in (
            partial(queries.delivery_of, subscriber_id=hook.id, event_id=claims[0].event_id),
            partial(queries.last_attempt, subscriber_id=hook.id),
            partial(implied.list_deliveries, subscriber=None, state=None, event_id=None, limit=50, cursor=None),
            partial(console.recent_states, subscriber_ids=[hook.id]),
            partial(owed.count, state="delivered"),
        ):
            connection.run(conn, operation)
        conn.set_trace_callback(None)
        of_the_log = [sql for sql in statements if "attempts" in sql and "delivery_id IS NULL" in sql]
        assert len(of_the_log) >= 5
        for sql in of_the_log:
            plan = " / ".join(row["detail"] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "idx_attempts_delivery_id_id" not in plan, (sql, plan)
            assert "attempts_of_the_log" in plan, (sql, plan)
