"""Reconciling against the COS stand-in, into a real store through the ingest path: the final jobs a gateway never
heard of are recorded once with their events, the ones it has are known, the unfinished ones are in flight; a
second run records nothing, and the callback arriving late is a duplicate."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree

from relay.cos.client import CosApi
from relay.cos.reconcile import Reconciler, final_jobs, found
from relay.cos.signing import Credentials
from relay.cos.sources import CosSource
from relay.ingest import Ingest, Reader
from relay.store import Store, store_for
from tests.conftest import callback_schema, job_id, record
from tests.cos.standin import CosStandIn, Job, Run
from tests.databases import count
from tests.events import problems

pytestmark = pytest.mark.anyio

CREDENTIALS = Credentials("AKIDstandin000000000000000000000000", "standinSecretKey00000000000000000")
CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=CST)


@pytest.fixture(scope="module")
def standin() -> Iterator[CosStandIn]:
    server = CosStandIn(CREDENTIALS, page_size=40).start()
    yield server
    server.stop()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "relay.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[Store]:
    with store_for(db) as opened:
        yield opened


def source(standin: CosStandIn) -> CosSource:
    return CosSource("media", "examplebucket-1250000000", "ap-guangzhou", CREDENTIALS, standin.url, tags=("Transcode",))


async def reconcile(standin: CosStandIn, store: Store) -> tuple[int, int, int, int]:
    ingest = Ingest(store, Reader(callback_schema()))

    async def into_store(body: bytes) -> int:
        _, result = await ingest.ingest(found(body, NOW, "media"))
        return len(result.new_items)

    api = CosApi(standin.url, CREDENTIALS, clock=time.time)
    try:
        tally = await Reconciler(source(standin), api, into_store, lambda: NOW).run()
    finally:
        await api.aclose()
    return tally.listed, tally.known, tally.recorded, len(tally.in_flight)


def callback_of(job: Job) -> bytes:
    """The callback COS sends for ``job``: its detail as a TaskFinish body."""
    page = etree.Element("Response")
    page.append(job.detail())
    body, _ = final_jobs(page)
    assert body is not None
    return body


async def test_missed_final_jobs_are_recorded_once_known_ones_are_not_and_unfinished_ones_are_in_flight(
    standin: CosStandIn, store: Store, db: Path
) -> None:
    standin.jobs.clear()
    created = NOW - timedelta(hours=2)
    standin.add(*(Job(job_id(n), created + timedelta(seconds=n), state="Success") for n in range(90)))
    standin.add(*(Job(job_id(n), created, state="Running") for n in range(90, 100)))
    standin.add(Job(job_id(200), NOW - timedelta(days=3)))  # before the lookback: not listed
    # The gateway heard 30 of the 90 callbacks before it went down.
    await record(store, *(callback_of(standin.jobs[job_id(n)]) for n in range(30)))

    assert await reconcile(standin, store) == (100, 30, 60, 10)
    assert (count(db, "jobs"), count(db, "events")) == (90, 90)  # one event each, the 60 missed included
    # The missed ones say where they were found; the ones COS called back for do not.
    events = [json.loads(body) for body in store.event_bodies(limit=1000)]
    bodies = {event["subject"]: event for event in events}
    assert {job for job, event in bodies.items() if event.get("cosreconciled") == "media"} == {
        job_id(n) for n in range(30, 90)
    }
    assert all(problems(json.dumps(event).encode()) == [] for event in bodies.values())
    # Again: nothing new.
    assert await reconcile(standin, store) == (100, 90, 0, 10)
    # The callback COS sends late for a reconciled job is a duplicate: no second event.
    [late] = await record(store, callback_of(standin.jobs[job_id(50)]))
    assert late.outcome == "duplicate"
    assert count(db, "events") == 90


async def test_finished_workflow_runs_are_recorded_once_with_their_runs_mark(standin: CosStandIn, store: Store) -> None:
    standin.jobs.clear()
    standin.runs.clear()
    workflow = "w2c474b19d1a480b64b6e171cf0d9d3f3"
    created = NOW - timedelta(hours=1)
    standin.runs.update(
        (run.run_id, run)
        for run in (
            Run("i" + "1" * 32, workflow, created, "Success"),
            Run("i" + "2" * 32, workflow, created, "Failed"),
            Run("i" + "3" * 32, "w" + "9" * 32, created, "Success"),  # another workflow: not the source's
        )
    )
    with_runs = replace(source(standin), tags=(), workflows=(workflow,))
    ingest = Ingest(store, Reader(callback_schema()))

    async def into_store(body: bytes) -> int:
        _, result = await ingest.ingest(found(body, NOW, "media"))
        return len(result.new_items)

    api = CosApi(standin.url, CREDENTIALS, clock=time.time)
    try:
        first = await Reconciler(with_runs, api, into_store, lambda: NOW).run()
        again = await Reconciler(with_runs, api, into_store, lambda: NOW).run()
    finally:
        await api.aclose()
    assert (first.listed, first.recorded, again.recorded, again.known) == (2, 2, 0, 2)
    runs = (await store.list_workflows()).items
    assert sorted(run["state"] for run in runs) == ["Failed", "Success"]
    events = [json.loads(body) for body in store.event_bodies(limit=10)]
    assert {event["type"] for event in events} == {"cos.workflow.succeeded", "cos.workflow.failed"}
    assert {event["cosreconciled"] for event in events} == {"media"}
    assert all(problems(json.dumps(event).encode()) == [] for event in events)
