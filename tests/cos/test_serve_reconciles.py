"""A real ``cos-relay serve`` with a ``[[cos]]`` source pointing at the COS stand-in: the callbacks COS sent while
the gateway was not listening are found at its start and delivered to the subscriber exactly once, marked
``cosreconciled``; the late callback of one of them is a duplicate and makes no second delivery. Two replicas on
one PostgreSQL database list a source once an interval between them, not once each. COS failing, then hanging,
leaves ingest untouched (every callback answered 200 while a reconciliation waits on COS), and the next run finds
the jobs whose callbacks were lost meanwhile and delivers each once."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, callback_url, job_id, throwaway_database
from tests.cos.standin import CosStandIn, Job
from tests.cos.test_client import CREDENTIALS
from tests.cos.test_reconcile import callback_of
from tests.live import ProcessServer, wait_until
from tests.postgres import Cluster
from tests.sink import Sink

pytestmark = pytest.mark.slow


def test_callbacks_missed_while_down_are_delivered_once_and_a_late_one_is_a_duplicate(
    standin: CosStandIn, sink: Sink, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    jobs = [Job(job_id(n), now - timedelta(minutes=n)) for n in range(1, 4)]
    standin.add(*jobs)
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[[subscribers]]\nname = "hook"\nurl = "{sink.url}/ok"\n\n'
        f'[[cos]]\nname = "media"\nbucket = "examplebucket-1250000000"\nregion = "ap-guangzhou"\n'
        f'secret_id = "{CREDENTIALS.secret_id}"\nsecret_key = "{CREDENTIALS.secret_key}"\n'
        f'endpoint = "{standin.url}"\ntags = ["Transcode"]\nlookback = "1h"\n'
    )
    args = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--config", str(config))
    server = ProcessServer(tmp_path / "relay.db", args=(*args, "--allow-networks", "127.0.0.0/8")).start()
    try:
        sink.wait_for("/ok", 3)
        events = [json.loads(request.body) for request in sink.to("/ok")]
        assert {event["subject"] for event in events} == {job.job_id for job in jobs}
        assert {event.get("cosreconciled") for event in events} == {"media"}
        # The callbacks the reconciliation recorded say where they came from.
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        found = httpx.get(f"{server.url}/api/jobs/{jobs[0].job_id}/callbacks", headers=admin, timeout=30).json()
        assert [item["source_addr"] for item in found["items"]] == ["cos:media"]
        late = httpx.post(f"{server.url}{callback_url()}", content=callback_of(jobs[0]), timeout=30)
        assert late.json() == {"status": "duplicate"}
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert 'relay_cos_missed_callbacks_total{source="media"} 3.0' in metrics
        owed = httpx.get(f"{server.url}/api/deliveries", headers=admin, timeout=30).json()["items"]
        assert len(owed) == 3  # the late callback made no event, so no delivery
    finally:
        output = server.stop()
    assert len(sink.to("/ok")) == 3
    assert CREDENTIALS.secret_key not in output


def config_file(tmp_path: Path, standin: CosStandIn, sink: Sink, every: str) -> Path:
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[[subscribers]]\nname = "hook"\nurl = "{sink.url}/ok"\n\n'
        f'[[cos]]\nname = "media"\nbucket = "examplebucket-1250000000"\nregion = "ap-guangzhou"\n'
        f'secret_id = "{CREDENTIALS.secret_id}"\nsecret_key = "{CREDENTIALS.secret_key}"\n'
        f'endpoint = "{standin.url}"\ntags = ["Transcode"]\nlookback = "1h"\nreconcile_every = "{every}"\n'
    )
    return config


def serve(db: Target, config: Path) -> ProcessServer:
    args = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--config", str(config))
    return ProcessServer(db, args=(*args, "--allow-networks", "127.0.0.0/8", "--poll-interval", "0.1")).start()


def lists(standin: CosStandIn) -> list[float]:
    """When the stand-in answered each list of media jobs (one a reconciliation)."""
    return standin.answered_at("/jobs")


def runs(server: ProcessServer) -> float:
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    found = re.search(r'relay_cos_reconcile_runs_total\{outcome="ok",source="media"\} ([0-9.]+)', metrics)
    return float(found[1]) if found else 0.0


def test_two_replicas_on_postgresql_list_a_source_once_an_interval_not_once_each(
    postgres: Cluster, standin: CosStandIn, sink: Sink, tmp_path: Path
) -> None:
    every = 10.0  # the shortest interval a source may have
    config = config_file(tmp_path, standin, sink, "10s")
    with throwaway_database(postgres) as url:
        servers = [serve(url, config), serve(url, config)]
        try:
            wait_until(lambda: len(lists(standin)) >= 3, timeout=6 * every, what="three intervals' reconciliations")
            done = sum(runs(server) for server in servers)
        finally:
            for server in servers:
                server.stop()
    listed = lists(standin)
    # Each run lists once; both replicas try every interval, and the one that claims it lists: the runs they made
    # between them are the lists COS saw, never two in one interval (two replicas each listing would come in pairs).
    assert done <= len(listed)
    assert len(listed) >= 3
    assert all(later - earlier >= every - 1 for earlier, later in pairwise(listed))


def test_cos_down_leaves_ingest_untouched_and_the_next_run_delivers_the_jobs_lost_meanwhile_once(
    standin: CosStandIn, sink: Sink, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    server = serve(tmp_path / "relay.db", config_file(tmp_path, standin, sink, "10s"))
    posted = [Job(job_id(50 + n), now) for n in range(10)]
    lost = [Job(job_id(70 + n), now - timedelta(minutes=5)) for n in range(3)]  # COS ran them; no callback came

    def post(jobs: list[Job]) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for job in jobs:
                answer = http.post(callback_url(), content=callback_of(job))
                assert answer.json() == {"status": "accepted"}

    try:
        wait_until(lambda: len(lists(standin)) >= 1, what="the first reconciliation")
        standin.fail_with(503)
        wait_until(lambda: any(asked.status == 503 for asked in standin.asked), timeout=30, what="a run failing on COS")
        post(posted[:5])  # COS is down: callbacks are answered all the same
        standin.add(*lost)
        standin.recover()
        standin.hold()  # COS back, but slow: the next run hangs on it
        wait_until(lambda: standin.waiting >= 1, timeout=30, what="the next run waiting on COS")
        post(posted[5:])
        assert standin.waiting >= 1  # every callback was answered while the run still waited on COS
        standin.let_go()
        sink.wait_for("/ok", len(posted) + len(lost))
        post([Job(job_id(90), now)])  # a marker: anything owed before it has arrived by the time it does
        sink.wait_for("/ok", len(posted) + len(lost) + 1)
    finally:
        server.stop()
    delivered = [request.event for request in sink.to("/ok")]
    assert sorted(event["subject"] for event in delivered) == sorted(
        job.job_id for job in [*posted, *lost, Job(job_id(90), now)]
    )
    assert {event["subject"] for event in delivered if event.get("cosreconciled")} == {job.job_id for job in lost}
