"""The confirmer's rules against the COS stand-in, with a real store, a fake clock and a fresh registry, stepped
with ``once``: a job COS knows in that state is released, one it does not know or has in another state is held
for good and counted; the jobs waiting are read back ten to a request; while COS fails nothing is released, the
failure is counted and logged once, and the jobs are released when COS answers again; a second replica in the
same moment asks COS nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree
from prometheus_client import CollectorRegistry

from relay.cos.client import CosApi
from relay.cos.confirming import Confirming, scopes
from relay.cos.reconcile import final_runs
from relay.cos.sources import CosSource
from relay.deliver.signing import generate_secret
from relay.domain.callback import Received
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.ingest import Ingest, Reader
from relay.metrics.counters import Metrics
from relay.store import Store, store_for
from tests.conftest import callback_schema, job_id
from tests.cos.standin import CosStandIn, Job, Run
from tests.cos.test_client import CREDENTIALS
from tests.cos.test_reconcile import callback_of
from tests.databases import rows
from tests.fakes import FakeClock

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SOURCE = CosSource(
    "media", "examplebucket-1250000000", "ap-guangzhou", CREDENTIALS, "", tags=("Transcode",), confirm=True
)


@pytest.fixture(scope="module")
def standin() -> Iterator[CosStandIn]:
    server = CosStandIn(CREDENTIALS).start()
    yield server
    server.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    with store_for(tmp_path / "relay.db") as opened:
        opened.add_subscriber(SubscriberSpec("hook", "http://192.0.2.1/hook", generate_secret(), Filter()), NOW)
        yield opened


@pytest.fixture
async def made() -> AsyncIterator[list[Replica]]:
    """The replicas a test makes, their COS clients closed after it."""
    replicas: list[Replica] = []
    yield replicas
    for replica in replicas:
        await replica.confirming.aclose()


class Replica:
    """A confirmer with its own registry, and the ingest path that holds a source's jobs."""

    def __init__(self, standin: CosStandIn, store: Store, clock: FakeClock, made: list[Replica]) -> None:
        made.append(self)
        self.source = replace(SOURCE, endpoint=standin.url)
        self.registry = CollectorRegistry()
        self.released = 0

        def api(source: CosSource) -> CosApi:
            return CosApi(source.endpoint, source.credentials, clock=time.time)

        def wake() -> None:
            self.released += 1

        self.confirming = Confirming([self.source], store, clock, Metrics(self.registry), api, wake)
        self.ingest = Ingest(store, Reader(callback_schema()), scopes([self.source]))
        self.clock = clock

    async def post(self, *items: Job | Run) -> None:
        for item in items:
            body = callback_of(item) if isinstance(item, Job) else run_callback(item)
            await self.ingest.ingest(Received(self.clock(), "127.0.0.1", "application/xml", body, "xml"))

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"source": "media", **labels}) or 0.0


def run_callback(run: Run) -> bytes:
    """The WorkflowFinish callback COS sends for ``run``."""
    page = etree.Element("Response")
    page.append(run.detail())
    [body] = final_runs(page)
    return body


def states(store: Store) -> dict[str, str]:
    """Each delivery's state, by its event's subject (the job)."""
    return {str(item["subject"]): item["state"] for item in store.list_deliveries(limit=100).items}


async def test_known_jobs_are_released_and_forged_or_differing_ones_held_and_counted(
    standin: CosStandIn, store: Store, made: list[Replica], tmp_path: Path
) -> None:
    standin.recover()
    real, forged, differs = (Job(job_id(n), NOW - timedelta(minutes=5)) for n in (1, 2, 3))
    standin.add(real, replace(differs, state="Failed"))  # COS has job 3 failed; the callback says it succeeded
    replica = Replica(standin, store, FakeClock(NOW), made)
    await replica.post(real, forged, differs)
    assert set(states(store).values()) == {"confirming"}
    asked = standin.count("/jobs/")
    assert await replica.confirming.once(replica.source)
    assert standin.count("/jobs/") == asked + 1  # three jobs, one read
    assert states(store) == {job_id(1): "pending", job_id(2): "unconfirmed", job_id(3): "unconfirmed"}
    assert replica.released == 1
    assert replica.sample("relay_cos_confirmed_total") == 1
    assert replica.sample("relay_cos_unconfirmed_total", reason="nonexistent") == 1
    assert replica.sample("relay_cos_unconfirmed_total", reason="state_differs") == 1
    job = await store.get_job(job_id(3))
    assert job is not None
    assert job["confirmation"] is not None
    assert (job["confirmation"]["reason"], job["confirmation"]["seen"]) == ("state_differs", "Failed")
    replica.clock.advance(5)
    assert await replica.confirming.once(replica.source)  # nothing waits: COS is not asked
    assert standin.count("/jobs/") == asked + 1
    summaries = rows(tmp_path / "relay.db", "SELECT confirmation FROM callbacks ORDER BY id")
    assert [row["confirmation"] for row in summaries] == ["confirmed", "unconfirmed", "unconfirmed"]


async def test_waiting_jobs_are_read_back_ten_to_a_request(
    standin: CosStandIn, store: Store, made: list[Replica]
) -> None:
    standin.recover()
    jobs = [Job(job_id(100 + n), NOW - timedelta(minutes=1)) for n in range(25)]
    standin.add(*jobs)
    replica = Replica(standin, store, FakeClock(NOW), made)
    await replica.post(*jobs)
    asked = standin.count("/jobs/")
    assert await replica.confirming.once(replica.source)
    assert standin.count("/jobs/") == asked + 3
    assert set(states(store).values()) == {"pending"}


async def test_while_cos_fails_nothing_is_released_and_after_it_recovers_everything_is(
    standin: CosStandIn, store: Store, made: list[Replica], caplog: pytest.LogCaptureFixture
) -> None:
    jobs = [Job(job_id(200 + n), NOW - timedelta(minutes=1)) for n in range(3)]
    standin.add(*jobs)
    replica = Replica(standin, store, FakeClock(NOW), made)
    await replica.post(*jobs)
    try:
        with caplog.at_level(logging.INFO, logger="relay.cos.confirming"):
            for status in (503, 429, 500, 403):
                standin.fail_with(status)
                assert not await replica.confirming.once(replica.source)
                replica.clock.advance(60)
                assert set(states(store).values()) == {"confirming"}
            standin.recover()
            assert await replica.confirming.once(replica.source)
    finally:
        standin.recover()
    assert set(states(store).values()) == {"pending"}
    assert replica.sample("relay_cos_confirm_failures_total", kind="throttled") == 2
    assert replica.sample("relay_cos_confirm_failures_total", kind="server") == 1
    assert replica.sample("relay_cos_confirm_failures_total", kind="signature") == 1
    assert replica.sample("relay_cos_unconfirmed_total", reason="nonexistent") == 0
    assert len([record for record in caplog.records if "failed" in record.getMessage()]) == 1
    assert any("works again" in record.getMessage() for record in caplog.records)
    assert CREDENTIALS.secret_key not in caplog.text


async def test_a_second_replica_in_the_same_moment_asks_cos_nothing(
    standin: CosStandIn, store: Store, made: list[Replica]
) -> None:
    standin.recover()
    clock = FakeClock(NOW)
    first, second = Replica(standin, store, clock, made), Replica(standin, store, clock, made)
    early, late = (Job(job_id(300 + n), NOW - timedelta(minutes=1)) for n in range(2))
    standin.add(early, late)
    await first.post(early)
    asked = standin.count("/jobs/")
    assert await second.confirming.once(second.source)  # claims this moment's pass
    await first.post(late)
    assert await first.confirming.once(first.source)  # the pass is taken: the late job waits its turn
    assert standin.count("/jobs/") == asked + 1
    assert states(store) == {job_id(300): "pending", job_id(301): "confirming"}
    clock.advance(1)
    assert await first.confirming.once(first.source)
    assert standin.count("/jobs/") == asked + 2
    assert states(store) == {job_id(300): "pending", job_id(301): "pending"}


async def test_a_workflow_run_is_read_back_on_its_own_released_or_held(
    standin: CosStandIn, store: Store, made: list[Replica]
) -> None:
    standin.recover()
    workflow = "w2c474b19d1a480b64b6e171cf0d9d3f3"
    real, forged, differs = (Run("i" + str(n) * 32, workflow, NOW - timedelta(minutes=5)) for n in (1, 2, 3))
    standin.runs.update({real.run_id: real, differs.run_id: replace(differs, state="Failed")})
    replica = Replica(standin, store, FakeClock(NOW), made)
    await replica.post(real, forged, differs)
    assert set(states(store).values()) == {"confirming"}
    asked = standin.count("/workflowexecution/")
    assert await replica.confirming.once(replica.source)
    assert standin.count("/workflowexecution/") == asked + 3
    assert states(store) == {real.run_id: "pending", forged.run_id: "unconfirmed", differs.run_id: "unconfirmed"}
    assert replica.sample("relay_cos_unconfirmed_total", reason="nonexistent") == 1
    assert replica.sample("relay_cos_unconfirmed_total", reason="state_differs") == 1
