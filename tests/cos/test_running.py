"""The reconciler loop's rules against the COS stand-in, with a real store, a fake clock and a fresh registry:
one run an interval (however many replicas), missed jobs recorded and counted, jobs in flight and their age
shown, a COS failure counted by kind and logged once a streak."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from relay.cos.client import CosApi
from relay.cos.running import QueueCheck, Reconciling
from relay.cos.sources import CosSource
from relay.ingest import Ingest, Reader
from relay.metrics.counters import Metrics
from relay.store import Store, store_for
from tests.conftest import callback_schema, job_id
from tests.cos.standin import CosStandIn, Job, Queue
from tests.cos.test_client import CREDENTIALS
from tests.fakes import FakeClock

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def standin() -> Iterator[CosStandIn]:
    server = CosStandIn(CREDENTIALS).start()
    server.add(*(Job(job_id(n), NOW - timedelta(minutes=n)) for n in range(1, 4)))
    server.add(Job(job_id(9), NOW - timedelta(minutes=30), state="Running"))
    yield server
    server.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    with store_for(tmp_path / "relay.db") as opened:
        yield opened


def replica(
    standin: CosStandIn, store: Store, clock: FakeClock, queues: QueueCheck | None = None
) -> tuple[Reconciling, CollectorRegistry, CosSource]:
    source = CosSource(
        "media", "examplebucket-1250000000", "ap-guangzhou", CREDENTIALS, standin.url, tags=("Transcode",)
    )
    registry = CollectorRegistry()

    def api(source: CosSource) -> CosApi:
        return CosApi(source.endpoint, source.credentials, clock=time.time)

    ingest = Ingest(store, Reader(callback_schema()))
    return Reconciling([source], store, ingest, clock, Metrics(registry), api, queues), registry, source


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"source": "media", **labels}) or 0.0


async def test_one_replica_reconciles_an_interval_and_shows_what_it_found(standin: CosStandIn, store: Store) -> None:
    standin.recover()
    clock = FakeClock(NOW)
    first, registry, source = replica(standin, store, clock)
    second, other, _ = replica(standin, store, clock)
    asked = standin.count("/jobs")
    assert await first.once(source)
    assert await second.once(source)  # the same interval: nothing to do, and no request to COS
    assert standin.count("/jobs") == asked + 1
    assert sample(registry, "relay_cos_missed_callbacks_total") == 3
    assert sample(registry, "relay_cos_jobs_in_flight") == 1
    assert sample(registry, "relay_cos_oldest_in_flight_seconds") == pytest.approx(30 * 60, abs=1)
    assert sample(registry, "relay_cos_last_reconcile_timestamp_seconds") == NOW.timestamp()
    [flying] = await store.list_in_flight()
    assert (flying["source"], flying["job_id"], flying["state"]) == ("media", job_id(9), "Running")
    assert sample(other, "relay_cos_reconcile_runs_total", outcome="ok") == 0
    clock.advance(source.reconcile_every)
    assert await second.once(source)  # the next interval: whichever replica asks first
    assert sample(other, "relay_cos_missed_callbacks_total") == 0  # already recorded: nothing new


async def test_a_cos_failure_is_counted_by_kind_and_logged_once_a_streak(
    standin: CosStandIn, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(NOW)
    loop, registry, source = replica(standin, store, clock)
    standin.fail_with(503, "ServiceUnavailable")
    try:
        with caplog.at_level(logging.INFO, logger="relay.cos.running"):
            for _ in range(3):
                assert not await loop.once(source)
                clock.advance(source.reconcile_every)
            standin.recover()
            assert await loop.once(source)
    finally:
        standin.recover()
    assert sample(registry, "relay_cos_reconcile_runs_total", outcome="throttled") == 3
    assert sample(registry, "relay_cos_reconcile_runs_total", outcome="ok") == 1
    failed = [record for record in caplog.records if "failed" in record.getMessage()]
    assert len(failed) == 1
    assert any("works again" in record.getMessage() for record in caplog.records)
    assert CREDENTIALS.secret_key not in caplog.text


async def test_each_run_shows_whether_each_queue_calls_back_here(standin: CosStandIn, store: Store) -> None:
    standin.recover()
    here = "https://relay.example.com/cos/callback"
    standin.queues.clear()
    standin.queues["p1"] = Queue("p1", "main")  # callback off
    on = {"State": "On", "Type": "Url", "Event": "TaskFinish"}
    standin.queues["p2"] = Queue("p2", "bulk", notify={**on, "Url": f"{here}?token=in-force"})
    standin.queues["p3"] = Queue("p3", "old", notify={**on, "Url": "https://elsewhere.example/cb?token=in-force"})
    clock = FakeClock(NOW + timedelta(days=1))
    loop, registry, source = replica(standin, store, clock, QueueCheck(here, lambda: ("in-force",)))
    assert await loop.once(source)
    shown = {queue: sample(registry, "relay_cos_queue_callback_here", queue=queue) for queue in ("p1", "p2", "p3")}
    assert shown == {"p1": 0, "p2": 1, "p3": 0}
    # Kept for the console's overview: where each callback points (never its token) and whether that is here.
    kept = {queue["queue_id"]: (queue["callback"], queue["here"]) for queue in await store.list_queues()}
    assert kept == {
        "p1": ("off", False),
        "p2": (here, True),
        "p3": ("https://elsewhere.example/cb", False),
    }
