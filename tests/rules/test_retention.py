"""What a prune removes and what it keeps, on a real database at a fake clock: the raw window for callbacks,
finished deliveries and events, the job window for job and workflow records, and never a delivery still owed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from relay.domain.callback import Received
from relay.domain.errors import Malformed
from relay.domain.retention import (
    Cutoffs,
    Pruned,
    Windows,
    callback_may_go,
    delivery_may_go,
    event_may_go,
    job_record_may_go,
)
from relay.maintenance.pruning import Pruner
from relay.metrics.counters import Metrics
from relay.metrics.exposition import StoreCollector
from relay.settings.table import Settings
from relay.store import SqliteStore, Store
from relay.store.failures import StoreUnavailable
from relay.store.records import Target
from tests.conftest import DATA, Outbox, job_body
from tests.databases import rows

pytestmark = pytest.mark.anyio

DAY = 86400.0
WINDOWS = Windows.of_seconds(30 * DAY, 90 * DAY)
WORKFLOW = (DATA / "samples" / "workflow_finish_success.xml").read_bytes()
NONEXISTENT = (DATA / "samples" / "nonexist_job_ids_only.xml").read_bytes()


def removed(pruned: Pruned) -> dict[str, int]:
    return {kind: n for kind, n in pruned.counts.items() if n}


def pruner(outbox: Outbox, windows: Windows = WINDOWS, **options: object) -> Pruner:
    return Pruner(outbox.store, windows, outbox.clock, **options)  # type: ignore[arg-type]


async def test_delivered_callbacks_go_with_their_deliveries_attempts_and_events_once_past_the_window(
    outbox: Outbox,
) -> None:
    outbox.add("hook", "/ok")
    await outbox.ingest(job_body(1), job_body(2))
    await outbox.step()
    outbox.clock.advance(30 * DAY - 1)
    assert (await pruner(outbox).prune()).total == 0
    outbox.clock.advance(2)
    pruned = await pruner(outbox).prune()
    assert removed(pruned) == {
        "callbacks": 2,
        "dedup_keys": 2,
        "deliveries": 2,
        "attempts": 2,
        "events": 2,
    }
    assert outbox.deliveries() == []
    job = await outbox.store.get_job("j" + f"{1:032x}")
    assert job is not None  # the job window is longer
    assert [entry["callback_id"] for entry in job["history"]] == [None]  # its raw callback has gone


async def test_deliveries_still_owed_and_their_event_stay_whatever_their_age_and_are_delivered_later(
    outbox: Outbox,
) -> None:
    outbox.add("ok", "/ok")
    outbox.add("retrying", "/fail")
    outbox.add("held", "/ok")
    outbox.subscribers.pause("held")
    await outbox.ingest(job_body(1))
    await outbox.step()
    outbox.clock.advance(3650 * DAY)
    pruned = await pruner(outbox).prune()
    assert removed(pruned) == {
        "callbacks": 1,
        "dedup_keys": 1,
        "deliveries": 1,  # ok's alone
        "attempts": 1,
        "jobs": 1,
        "job_states": 1,
    }
    left = {d["subscriber"]: d["state"] for d in outbox.deliveries()}
    assert left == {"retrying": "pending", "held": "pending"}
    outbox.subscribers.resume("held")
    outbox.subscribers.update("retrying", {"url": "http://192.0.2.1/ok"})
    await outbox.step()
    assert outbox.states() == ["delivered", "delivered"]
    assert len({request.body for request in outbox.sender.requests}) == 1  # the same event, body intact


async def test_a_delivery_in_flight_stays_whatever_its_age(outbox: Outbox) -> None:
    outbox.add("hook", "/ok")
    await outbox.ingest(job_body(1))
    assert len(await outbox.store.claim(outbox.clock(), timedelta(seconds=30), 10)) == 1
    outbox.clock.advance(3650 * DAY)
    pruned = await pruner(outbox).prune()
    assert removed(pruned) == {"callbacks": 1, "dedup_keys": 1, "jobs": 1, "job_states": 1}
    assert outbox.states() == ["in_flight"]
    await outbox.step()  # its lease long expired: taken over and delivered
    assert outbox.states() == ["delivered"]


async def test_events_owed_to_nobody_go_with_their_callback(outbox: Outbox) -> None:
    await outbox.ingest(job_body(1))
    outbox.clock.advance(31 * DAY)
    pruned = await pruner(outbox).prune()
    assert removed(pruned) == {"callbacks": 1, "dedup_keys": 1, "events": 1}


async def test_duplicate_and_quarantined_callbacks_go_too(outbox: Outbox) -> None:
    await outbox.ingest(job_body(1), job_body(1))
    received = Received(outbox.clock(), "127.0.0.1", "application/xml", b"<nope", "xml")
    await outbox.store.record_rejection(received, Malformed("not XML"), 16)
    outbox.clock.advance(31 * DAY)
    pruned = await pruner(outbox).prune()
    assert removed(pruned) == {"callbacks": 3, "dedup_keys": 1, "events": 1}


async def test_job_and_workflow_records_go_once_past_the_job_window(outbox: Outbox) -> None:
    await outbox.ingest(job_body(1), WORKFLOW)
    outbox.clock.advance(89 * DAY)
    pruned = await pruner(outbox).prune()
    assert removed(pruned) == {"callbacks": 2, "dedup_keys": 2, "events": 2}
    outbox.clock.advance(2 * DAY)
    pruned = await pruner(outbox).prune()
    assert removed(pruned) == {"jobs": 1, "job_states": 1, "workflows": 1, "workflow_states": 1}
    assert await outbox.store.get_job("j" + f"{1:032x}") is None
    assert outbox.store.counts()["jobs"] == 0


async def test_a_job_updated_within_the_window_keeps_its_latest_state_while_older_history_goes(
    outbox: Outbox,
) -> None:
    await outbox.ingest(job_body(1, "Running"))
    outbox.clock.advance(80 * DAY)
    await outbox.ingest(job_body(1, "Success"))
    outbox.clock.advance(20 * DAY)
    pruned = await pruner(outbox).prune()
    assert removed(pruned) == {"callbacks": 1, "dedup_keys": 1, "events": 1, "job_states": 1}
    job = await outbox.store.get_job("j" + f"{1:032x}")
    assert job is not None
    assert job["state"] == "Success"
    assert [entry["state"] for entry in job["history"]] == ["Success"]


async def test_zero_windows_remove_nothing_however_old(outbox: Outbox) -> None:
    outbox.add("hook", "/ok")
    await outbox.ingest(job_body(1), WORKFLOW)
    await outbox.step()
    outbox.clock.advance(3650 * DAY)
    assert (await pruner(outbox, Windows.of_seconds(math.inf, math.inf)).prune()).total == 0
    assert outbox.states() == ["delivered", "delivered"]  # the job's event and the workflow's


async def test_a_dry_run_counts_exactly_what_the_prune_then_removes(outbox: Outbox) -> None:
    outbox.add("ok", "/ok")
    outbox.add("held", "/ok")
    outbox.subscribers.pause("held")
    await outbox.ingest(*(job_body(n) for n in range(5)), WORKFLOW)
    await outbox.step()
    outbox.clock.advance(40 * DAY)
    await outbox.ingest(job_body(9))
    outbox.clock.advance(60 * DAY)
    cutoffs = WINDOWS.cutoffs(outbox.clock())
    counted = outbox.store.count_prunable(cutoffs)
    assert counted == (await pruner(outbox).prune(cutoffs)).counts
    assert (counted["deliveries"], counted["events"], counted["jobs"]) == (6, 0, 5)  # events still held


async def test_a_large_prune_goes_in_batches_of_at_most_the_batch_size(outbox: Outbox) -> None:
    outbox.add("hook", "/ok")
    await outbox.ingest(*(job_body(n) for n in range(10)))
    await outbox.step()
    outbox.clock.advance(100 * DAY)
    cutoffs = WINDOWS.cutoffs(outbox.clock())
    batches = []
    while counts := await outbox.store.prune(cutoffs, 3, outbox.clock(), 0):
        if not any(counts.values()):
            break
        batches.append(counts)
    # The attempts of the events a batch removes go with them: the lanes' runs record them in no order of the log.
    assert all(n <= 3 for counts in batches for kind, n in counts.items() if kind != "attempts"), batches
    assert all(counts["attempts"] <= 3 + counts["events"] for counts in batches), batches
    assert sum(counts["callbacks"] for counts in batches) == 10
    assert sum(counts["jobs"] for counts in batches) == 10


async def test_pruned_rows_are_counted_per_kind_and_the_time_of_the_last_prune_is_recorded(outbox: Outbox) -> None:
    registry = CollectorRegistry()
    await outbox.ingest(job_body(1))
    assert outbox.store.outbox_stats()["pruned_at"] is None
    outbox.clock.advance(31 * DAY)
    await pruner(outbox, metrics=Metrics(registry)).prune()
    assert registry.get_sample_value("relay_pruned_rows_total", {"kind": "callbacks"}) == 1
    assert registry.get_sample_value("relay_pruned_rows_total", {"kind": "deliveries"}) == 0
    assert outbox.store.outbox_stats()["pruned_at"] == outbox.clock()


async def test_the_background_pruner_prunes_at_start_and_again_when_woken(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    completed: list[anyio.Event] = [anyio.Event(), anyio.Event()]
    batch = outbox.store.prune

    async def observed(*args: Any) -> dict[str, int]:
        counts = await batch(*args)
        if not any(counts.values()):
            next(event for event in completed if not event.is_set()).set()
        return counts

    monkeypatch.setattr(outbox.store, "prune", observed)
    await outbox.ingest(job_body(1))
    background = pruner(outbox)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(background.run)
        with anyio.fail_after(10):
            await completed[0].wait()
            assert outbox.store.counts()["callbacks"] == 1
            outbox.clock.advance(31 * DAY)
            background.wake()
            await completed[1].wait()
        assert outbox.store.counts()["callbacks"] == 0
        tasks.cancel_scope.cancel()


async def test_a_failing_prune_is_logged_in_one_line_and_tried_again(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tries: list[anyio.Event] = [anyio.Event(), anyio.Event()]

    async def locked(*args: Any) -> dict[str, int]:
        next(event for event in tries if not event.is_set()).set()
        raise StoreUnavailable("database is locked", "locked")

    monkeypatch.setattr(outbox.store, "prune", locked)
    background = pruner(outbox)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(background.run)
        with anyio.fail_after(10):
            await tries[0].wait()
            background.wake()
            await tries[1].wait()
        tasks.cancel_scope.cancel()
    failures = [record for record in caplog.records if record.getMessage().startswith("prune failed")]
    assert failures[0].getMessage() == "prune failed: database is locked"
    assert failures[0].exc_info is None


#: Cutoffs, in days after the first callbacks, that split each kind between rows that go and rows that stay.
ORACLE_CUTOFFS = {"both_windows_split": (10, 10), "raw_only": (25, None), "jobs_only": (None, 30)}


@pytest.mark.parametrize("cutoff_days", ORACLE_CUTOFFS.values(), ids=ORACLE_CUTOFFS.keys())
async def test_the_store_prunes_exactly_the_rows_the_domain_rules_let_go(
    outbox: Outbox, outbox_settings: Settings, cutoff_days: tuple[int | None, int | None]
) -> None:
    """`relay.domain.retention`'s predicates are the rule; `relay.store.ops.retention`'s SQL applies it through
    indexes, a batch at a time. Every row of every kind, before and after a prune, checked against the rule."""
    for name, path in (("ok", "/ok"), ("held", "/ok"), ("leaving", "/ok")):
        outbox.add(name, path)
    outbox.add("failing", "/fail", retry_schedule=[0])  # dead at its first failure
    outbox.subscribers.pause("held")
    start = outbox.clock()
    await outbox.ingest(job_body(1), job_body(2), WORKFLOW, NONEXISTENT)
    await outbox.step()
    outbox.subscribers.pause("leaving")
    outbox.clock.advance(20 * DAY)
    await outbox.ingest(job_body(3), job_body(1, "Failed"))  # job 1: a second state, its job row updated
    outbox.subscribers.remove("leaving")  # its unfinished deliveries end cancelled
    await outbox.step()
    outbox.clock.advance(40 * DAY)
    raw_days, jobs_days = cutoff_days
    cutoffs = Cutoffs(
        raw=start + timedelta(days=raw_days) if raw_days is not None else None,
        jobs=start + timedelta(days=jobs_days) if jobs_days is not None else None,
    )
    before = _every_row(outbox_settings.db_path, outbox.store)
    assert {d["state"] for d in before["deliveries"]} >= {"delivered", "dead", "pending", "cancelled"}
    await pruner(outbox).prune(cutoffs)
    after = _every_row(outbox_settings.db_path, outbox.store)
    assert {kind: _keys(kept) for kind, kept in after.items()} == _kept_by_the_rules(before, cutoffs)
    assert 0 < sum(map(len, after.values())) < sum(map(len, before.values()))  # each case removes some, keeps some


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _every_row(db: Target, store: Store) -> dict[str, list[dict[str, Any]]]:
    """Each kind's rows with what the rules look at; ``key`` names the row. Deliveries as the store lists them:
    a row by its id, one the event log implies (no row) by its subscriber and event, as its attempts are keyed."""
    queries = {
        "callbacks": "SELECT id AS key, received_at AS at FROM callbacks",
        "dedup_keys": "SELECT dedup_key AS key, received_at AS at FROM items",
        "attempts": "SELECT id AS key, delivery_id, subscriber_id, event_id FROM attempts",
        "events": "SELECT id AS key, created_at AS at FROM events",
        "jobs": "SELECT job_id AS key, updated_at AS at FROM jobs",
        "job_states": "SELECT id AS key, received_at AS at FROM job_states",
        "workflows": "SELECT run_id AS key, updated_at AS at FROM workflow_runs",
        "workflow_states": "SELECT id AS key, received_at AS at FROM workflow_states",
        "nonexistent_job_ids": "SELECT id AS key, received_at AS at FROM nonexistent_job_ids",
    }
    found = {kind: rows(db, query) for kind, query in queries.items()}
    found["deliveries"] = [
        {"key": _delivery_key(d), "state": d["state"], "at": d["created_at"], "event_id": d["event_id"]}
        for d in store.list_deliveries(limit=1000).items
    ]
    return found


def _delivery_key(delivery: Mapping[str, Any]) -> object:
    if delivery["id"] is not None:
        return delivery["id"]
    return (delivery["subscriber_id"], delivery["event_id"])


def _keys(table: list[dict[str, Any]]) -> set[object]:
    return {row["key"] for row in table}


def _kept_by_the_rules(before: dict[str, list[dict[str, Any]]], cutoffs: Cutoffs) -> dict[str, set[object]]:
    deliveries = [d for d in before["deliveries"] if not delivery_may_go(d["state"], _stamp(d["at"]), cutoffs)]
    delivery_ids = {d["key"] for d in deliveries}
    left = {event["key"]: sum(d["event_id"] == event["key"] for d in deliveries) for event in before["events"]}
    kept = {
        "callbacks": {c["key"] for c in before["callbacks"] if not callback_may_go(_stamp(c["at"]), cutoffs)},
        "dedup_keys": {i["key"] for i in before["dedup_keys"] if not callback_may_go(_stamp(i["at"]), cutoffs)},
        "deliveries": delivery_ids,
        "attempts": {
            a["key"] for a in before["attempts"] if _delivery_key({**a, "id": a["delivery_id"]}) in delivery_ids
        },
        "events": {e["key"] for e in before["events"] if not event_may_go(_stamp(e["at"]), left[e["key"]], cutoffs)},
    }
    for kind in ("jobs", "job_states", "workflows", "workflow_states", "nonexistent_job_ids"):
        kept[kind] = {r["key"] for r in before[kind] if not job_record_may_go(_stamp(r["at"]), cutoffs)}
    return kept


async def test_the_scrape_leaves_out_the_space_gauges_the_backend_cannot_tell(outbox: Outbox) -> None:
    await outbox.ingest(job_body(1))
    await pruner(outbox).prune()
    families = {family.name: family for family in StoreCollector(outbox.store.outbox_stats, outbox.clock).collect()}
    on_sqlite = isinstance(outbox.store, SqliteStore)
    assert ("relay_store_reusable_bytes" in families) is on_sqlite  # PostgreSQL: None, never a made-up 0
    assert ("relay_store_filesystem_free_bytes" in families) is on_sqlite
    pruned = families["relay_prune_last_success_timestamp_seconds"].samples[0].value
    assert pruned == outbox.clock().timestamp()
