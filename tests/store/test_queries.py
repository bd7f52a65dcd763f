"""The store's reads, the same answers on both backends: jobs, callbacks and deliveries listed newest first,
by filter and page by page (no gap, no repeat), one of each by its id, and the counts a scrape reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from datetime import timedelta

import orjson

from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.delivery import Attempt, Decision, Finished, Outcome
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.store import Store, store_for
from relay.store.records import Item, Page, Target
from tests.conftest import DATA, job_body, job_id, record

RUN_ID = "icf43042c67ab601aa9e79a4f03b42e4c"


def walk(read: Callable[[str | None], Page[Item]]) -> list[list[Item]]:
    """Every page of a listing, following its cursors to the end."""
    pages, cursor = [read(None)], None
    while (cursor := pages[-1].cursor) is not None:
        pages.append(read(cursor))
    return [page.items for page in pages]


@contextlib.contextmanager
def filled(db: Target, subscribers: int = 0) -> Iterator[Store]:
    """A store on ``db`` with ``subscribers`` subscribers (``hook0``...) and five jobs: 1, 3 and 5 succeeded,
    2 and 4 failed; job 1's callback arrived twice."""
    with store_for(db) as store:
        for number in range(subscribers):
            spec = SubscriberSpec(f"hook{number}", "http://127.0.0.1:9/hook", generate_secret(), Filter())
            store.add_subscriber(spec, utc_now())
        bodies = [job_body(number, "Failed" if number % 2 == 0 else "Success") for number in range(1, 6)]
        asyncio.run(record(store, *bodies, job_body(1)))
        yield store


def test_jobs_are_listed_newest_first_by_state_and_page_by_page(database: Target) -> None:
    with filled(database) as store:
        pages = walk(lambda cursor: asyncio.run(store.list_jobs(limit=2, cursor=cursor)))
        assert [len(page) for page in pages] == [2, 2, 1]
        assert [job["job_id"] for page in pages for job in page] == [job_id(n) for n in (5, 4, 3, 2, 1)]
        failed = asyncio.run(store.list_jobs(state="Failed"))
        assert [job["job_id"] for job in failed.items] == [job_id(4), job_id(2)]
        assert failed.cursor is None
        assert asyncio.run(store.list_jobs(state="Cancelled")).items == []


def test_a_job_is_read_by_its_id_with_its_history_and_an_unknown_one_is_none(database: Target) -> None:
    with filled(database) as store:
        job = asyncio.run(store.get_job(job_id(2)))
        assert job is not None
        assert job["state"] == "Failed"
        history = asyncio.run(store.job_history(job_id(2), 10, None))
        assert history is not None
        assert [entry["state"] for entry in history.items] == ["Failed"]
        assert asyncio.run(store.get_job(job_id(99))) is None
        assert asyncio.run(store.job_history(job_id(99), 10, None)) is None


def test_callbacks_are_listed_newest_first_and_a_duplicate_shows_the_first_copys_body(database: Target) -> None:
    with filled(database) as store:
        pages = walk(lambda cursor: asyncio.run(store.list_callbacks(limit=4, cursor=cursor)))
        assert [len(page) for page in pages] == [4, 2]
        listed = [callback for page in pages for callback in page]
        assert [callback["outcome"] for callback in listed] == ["duplicate"] + ["accepted"] * 5
        assert [callback["id"] for callback in listed] == sorted((callback["id"] for callback in listed), reverse=True)
        [duplicate] = asyncio.run(store.list_callbacks(outcome="duplicate")).items
        assert duplicate["body_prefix"] == listed[-1]["body_prefix"] == job_body(1)[:4096].decode()
        assert asyncio.run(store.list_callbacks(outcome="rejected")).items == []
        assert store.counts()["callbacks"] == 6
        assert store.counts()["jobs"] == 5


def test_deliveries_are_listed_by_subscriber_state_and_event_page_by_page(database: Target) -> None:
    with filled(database, subscribers=2) as store:
        pages = walk(lambda cursor: store.list_deliveries(limit=4, cursor=cursor))
        assert [len(page) for page in pages] == [4, 4, 2]
        listed = [delivery for page in pages for delivery in page]
        # Pending in the event log, none has a row (id null): newest event first, each one's subscribers newest first.
        assert {delivery["id"] for delivery in listed} == {None}
        newest_first = list(dict.fromkeys(delivery["event_id"] for delivery in listed))
        assert newest_first == [orjson.loads(body)["id"] for body in reversed(store.event_bodies(10))]
        assert [delivery["subscriber"] for delivery in listed] == ["hook1", "hook0"] * 5
        assert {delivery["state"] for delivery in listed} == {"pending"}
        first = store.list_deliveries(subscriber="hook0").items
        assert len(first) == 5
        assert {delivery["subscriber"] for delivery in first} == {"hook0"}
        event = listed[0]["event_id"]
        assert len(store.list_deliveries(event_id=event).items) == 2
        assert store.list_deliveries(state="dead").items == []
        assert store.list_deliveries(subscriber="nobody").items == []
        assert store.count_deliveries("pending") == 10
        one = store.delivery_of(listed[0]["subscriber_id"], listed[0]["event_id"])
        assert one is not None
        assert one["attempts_log"] == []
        assert store.get_delivery(10**9) is None


def test_a_page_the_logs_deliveries_fill_is_followed_by_the_rows_below_every_cursor(database: Target) -> None:
    """A retry row of an event every cursor has passed is listed after the log's unfinished deliveries, even when they
    fill a page to its end (the next page then starts the rows from the newest)."""
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter()), at)
        asyncio.run(record(store, job_body(1), job_body(2)))
        first, second = asyncio.run(store.claim(at, LEASE_MARGIN, 2))
        failed = Attempt(Outcome.HTTP_5XX, 500, 0.01, None, b"", None)
        delivered = Attempt(Outcome.SUCCESS, 204, 0.01, None, b"", None)
        retry = Decision("pending", at + timedelta(minutes=1))
        asyncio.run(
            store.finish(
                [Finished(first, failed, retry, at, at), Finished(second, delivered, Decision("delivered"), at, at)],
                LEASE_MARGIN,
            )
        )
        asyncio.run(record(store, job_body(3), job_body(4)))  # owed after the cursor: pending, no row
        pages = walk(lambda cursor: store.list_deliveries(state="pending", limit=2, cursor=cursor))
    assert [[delivery["id"] is None for delivery in page] for page in pages] == [[True, True], [False]]
    assert pages[1][0]["event_id"] == first.event_id


def test_events_are_read_back_whole_and_the_outbox_is_counted_by_state(database: Target) -> None:
    with filled(database, subscribers=1) as store:
        bodies = store.event_bodies(10)
        assert len(bodies) == 5
        newest = store.list_deliveries(limit=1).items[0]["event_id"]
        assert store.event_body(newest) in bodies
        assert store.event_body("no-such-event") is None
        stats = store.outbox_stats()
        assert stats["outbox"]["pending"][0] == 5
        assert stats["outbox"]["dead"] == (0, None)
        assert stats["subscribers"] == {"hook0": "enabled"}


def test_a_workflow_run_is_read_with_its_tasks_and_history_and_an_unknown_one_is_none(database: Target) -> None:
    with store_for(database) as store:
        asyncio.run(record(store, (DATA / "samples" / "workflow_finish_success.xml").read_bytes()))
        run = asyncio.run(store.get_workflow(RUN_ID))
        assert run is not None
        assert run["run_id"] == RUN_ID
        assert len(run["history"]) == 1
        assert isinstance(run["tasks"], list)
        assert asyncio.run(store.get_workflow("i-unknown")) is None


def test_the_consoles_reads_of_a_job_and_of_the_last_day(database: Target) -> None:
    with filled(database, subscribers=2) as store:
        now = utc_now()
        overview = store.overview(now - timedelta(hours=1), now - timedelta(days=1))
        assert sum(row["n"] for row in overview["callbacks"]) == 6
        assert {(row["state"], row["n"]) for row in overview["jobs"]} == {("Success", 3), ("Failed", 2)}
        assert store.overview(now + timedelta(hours=1), now + timedelta(hours=1)) == {"callbacks": [], "jobs": []}
        asyncio.run(record(store, job_body(1, "Running")))  # a second state: a second callback of job 1
        callbacks = asyncio.run(store.job_callbacks(job_id(1), 64, 1, None))
        assert len(callbacks.items) == 1
        assert callbacks.cursor is not None
        rest = asyncio.run(store.job_callbacks(job_id(1), 64, 10, callbacks.cursor))
        assert len(rest.items) == 1
        assert rest.cursor is None
        assert rest.items[0]["id"] < callbacks.items[0]["id"]
        assert rest.items[0]["body_prefix"] == job_body(1)[:64].decode()
        deliveries = asyncio.run(store.job_deliveries(job_id(1), 10, None))
        assert sorted(delivery["subscriber"] for delivery in deliveries.items) == ["hook0", "hook0", "hook1", "hook1"]
        ids = [subscriber.id for subscriber in store.list_subscribers()]
        assert store.recent_states(ids) == {}  # nothing attempted yet


def test_a_subscribers_recent_attempted_deliveries_are_counted_by_state_and_its_last_attempt_read(
    database: Target,
) -> None:
    with filled(database, subscribers=1) as store:
        [subscriber] = store.list_subscribers()
        assert store.last_attempt(subscriber.id) is None

        async def deliver_one() -> None:
            at = utc_now()
            [claim] = await store.claim(at, LEASE_MARGIN, 1)
            delivered = Attempt(Outcome.SUCCESS, 204, 0.01, None, b"", None)
            await store.finish([Finished(claim, delivered, Decision("delivered"), at, at)], LEASE_MARGIN)

        asyncio.run(deliver_one())
        # Finishing one leased the subscriber's next delivery in the same transaction: attempted, in flight.
        assert store.recent_states([subscriber.id]) == {subscriber.id: {"delivered": 1, "in_flight": 1}}
        last = store.last_attempt(subscriber.id)
        assert last is not None
        assert (last["outcome"], last["status"]) == ("success", 204)


def nonexistent_body(*job_ids: str) -> bytes:
    return f"<Response><NonExistJobIds>{','.join(job_ids)}</NonExistJobIds></Response>".encode()


def test_job_ids_cos_did_not_know_are_listed_newest_first_with_their_callback_and_by_id(database: Target) -> None:
    with filled(database) as store:
        a, b, c = job_id(71), job_id(72), job_id(73)
        first, second = asyncio.run(record(store, nonexistent_body(a, b), nonexistent_body(c)))
        pages = walk(lambda cursor: asyncio.run(store.list_nonexistent(limit=2, cursor=cursor)))
        assert [[item["job_id"] for item in page] for page in pages] == [[c, b], [a]]
        listed = [item for page in pages for item in page]
        assert [item["callback_id"] for item in listed] == [second.callback_id, first.callback_id, first.callback_id]
        assert all(item["received_at"] for item in listed)
        [only] = asyncio.run(store.list_nonexistent(job_id=b)).items
        assert only["callback_id"] == first.callback_id
        assert asyncio.run(store.list_nonexistent(job_id=job_id(1))).items == []


def test_workflow_runs_are_listed_by_state_and_workflow_and_a_task_names_its_run(database: Target) -> None:
    run, task = "icf43042c67ab601aa9e79a4f03b42e4c", "j7e1b0c4a9f2d11efa3c95254001a2b3c"
    with filled(database) as store:
        asyncio.run(record(store, (DATA / "samples" / "workflow_finish_success.xml").read_bytes()))
        [listed] = asyncio.run(store.list_workflows()).items
        assert (listed["run_id"], listed["state"], listed["workflow_name"]) == (run, "Success", "ugc-publish")
        assert asyncio.run(store.list_workflows(state="Failed")).items == []
        assert asyncio.run(store.list_workflows(workflow_id=listed["workflow_id"])).items == [listed]
        assert asyncio.run(store.list_workflows(since="9999-01-01T00:00:00.000000Z")).items == []
        assert asyncio.run(store.run_of_task(task)) == run
        assert asyncio.run(store.run_of_task(job_id(1))) is None


def test_workflow_runs_page_newest_first(database: Target) -> None:
    sample = (DATA / "samples" / "workflow_finish_success.xml").read_bytes()
    runs = [f"i{number:032x}" for number in range(3)]
    with filled(database) as store:
        bodies = [sample.replace(b"icf43042c67ab601aa9e79a4f03b42e4c", run.encode()) for run in runs]
        asyncio.run(record(store, *bodies))
        pages = walk(lambda cursor: asyncio.run(store.list_workflows(limit=2, cursor=cursor)))
        assert [[item["run_id"] for item in page] for page in pages] == [runs[:0:-1], runs[:1]]
