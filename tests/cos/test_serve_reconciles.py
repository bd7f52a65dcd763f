"""A real ``cos-relay serve`` with a ``[[cos]]`` source pointing at the COS stand-in: the callbacks COS sent while
the gateway was not listening are found at its start and delivered to the subscriber exactly once, marked
``cosreconciled``; the late callback of one of them is a duplicate and makes no second delivery."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, callback_url, job_id
from tests.cos.standin import CosStandIn, Job
from tests.cos.test_client import CREDENTIALS
from tests.cos.test_reconcile import callback_of
from tests.live import ProcessServer
from tests.sink import Sink

pytestmark = pytest.mark.slow


@pytest.fixture
def standin() -> Iterator[CosStandIn]:
    server = CosStandIn(CREDENTIALS).start()
    yield server
    server.stop()


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
