"""A real ``cos-relay serve`` with a ``[[cos]]`` source that has ``confirm = true``, against the COS stand-in, on both
backends: a forged callback (a job COS does not know) is held, never delivered, counted and shown in the API and
the console, until an admin releases it; a real one is delivered once; one whose state COS has otherwise is held.
While COS fails, the callbacks are still answered 200 and their events wait, also through the pruner and a
SIGKILL of serve, and every one is delivered once when COS answers again.

The confirmed jobs are created before the source's lookback, so the reconciler (which runs too) never lists
them: what reaches the subscriber came through the confirmer."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, callback_url, job_id
from tests.cos.standin import CosStandIn, Job
from tests.cos.test_client import CREDENTIALS
from tests.cos.test_reconcile import callback_of
from tests.databases import rows
from tests.live import ProcessServer, wait_until
from tests.sink import Sink

pytestmark = [pytest.mark.slow, pytest.mark.both_backends]

XML = {"Content-Type": "application/xml"}
#: Before the lookback (1h): the reconciler never lists these jobs.
CREATED = datetime.now(UTC) - timedelta(hours=2)


def serve(database: Target, standin: CosStandIn, sink: Sink, tmp_path: Path, *args: str) -> ProcessServer:
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[[subscribers]]\nname = "hook"\nurl = "{sink.url}/ok"\n\n'
        f'[[cos]]\nname = "media"\nbucket = "examplebucket-1250000000"\nregion = "ap-guangzhou"\n'
        f'secret_id = "{CREDENTIALS.secret_id}"\nsecret_key = "{CREDENTIALS.secret_key}"\n'
        f'endpoint = "{standin.url}"\ntags = ["Transcode"]\nlookback = "1h"\nconfirm = true\n'
    )
    return ProcessServer(
        database,
        args=(
            *("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--config", str(config)),
            *("--allow-networks", "127.0.0.0/8", "--poll-interval", "0.1", *args),
        ),
    ).start()


def admin(server: ProcessServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)


def post(server: ProcessServer, *jobs: Job) -> list[int]:
    """Post each job's callback as COS would: every one answered 200 accepted. The callbacks' ids."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for job in jobs:
            answer = http.post(callback_url(), content=callback_of(job), headers=XML)
            assert answer.json() == {"status": "accepted"}, answer.text
    with admin(server) as http:
        listed = http.get("/api/callbacks", params={"limit": len(jobs)}).json()["items"]
    return [item["id"] for item in reversed(listed)]


def deliveries(server: ProcessServer, state: str) -> int:
    with admin(server) as http:
        return len(http.get("/api/deliveries", params={"state": state, "limit": 500}).json()["items"])


def subjects(sink: Sink) -> list[str]:
    return sorted(request.event["subject"] for request in sink.to("/ok"))


def console_page(server: ProcessServer, path: str) -> str:
    """A console page as a signed-in admin sees it."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        signed = http.post("/console/login", data={"token": ADMIN_TOKEN}, headers={"origin": server.url})
        assert signed.status_code == 303
        page = http.get(path)
        assert page.status_code == 200
        return page.text


def test_a_forged_callback_is_held_a_real_one_delivered_once_and_a_differing_one_held(
    database: Target, standin: CosStandIn, sink: Sink, tmp_path: Path
) -> None:
    real, forged, differs, marker = (Job(job_id(n), CREATED) for n in (1, 2, 3, 4))
    standin.add(real, Job(differs.job_id, CREATED, state="Failed"), marker)  # COS never ran job 2
    server = serve(database, standin, sink, tmp_path)
    try:
        _, forged_id, differs_id = post(server, real, forged, differs)
        sink.wait_for("/ok", 1)
        with admin(server) as http:
            wait_until(
                lambda: (
                    {item["confirmation"] for item in http.get("/api/callbacks").json()["items"]}
                    == {"confirmed", "unconfirmed"}
                ),
                what="COS's verdict on every callback",
            )
            job = http.get(f"/api/jobs/{forged.job_id}").json()
            assert (job["confirmation"]["status"], job["confirmation"]["reason"]) == ("unconfirmed", "nonexistent")
            [why] = http.get(f"/api/callbacks/{differs_id}/confirmations").json()["items"]
            assert (why["reason"], why["seen"]) == ("state_differs", "Failed")
        assert deliveries(server, "unconfirmed") == 2
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert 'relay_cos_confirmed_total{source="media"} 1.0' in metrics
        assert 'relay_cos_unconfirmed_total{reason="nonexistent",source="media"} 1.0' in metrics
        assert 'relay_cos_unconfirmed_total{reason="state_differs",source="media"} 1.0' in metrics
        # The console shows the held callbacks, and why.
        callbacks = console_page(server, "/console/callbacks")
        assert len(re.findall(r">unconfirmed<", callbacks)) >= 2
        assert "nonexistent" in console_page(server, f"/console/callbacks/{forged_id}")
        assert "unconfirmed" in console_page(server, f"/console/jobs/{forged.job_id}")
        # A later real callback is delivered: the held ones were not, meanwhile.
        post(server, marker)
        sink.wait_for("/ok", 2)
        assert subjects(sink) == sorted([real.job_id, marker.job_id])
        # An admin who knows better releases the forged one: delivered once.
        with admin(server) as http:
            released = http.post(f"/api/callbacks/{forged_id}/release")
            assert released.json() == {"callback_id": forged_id, "decision": "release", "deliveries": 1}
            assert http.post(f"/api/callbacks/{forged_id}/release").status_code == 404  # decided already
            assert http.post(f"/api/callbacks/{differs_id}/discard").json()["deliveries"] == 1
        sink.wait_for("/ok", 3)
        assert deliveries(server, "cancelled") == 1
    finally:
        server.stop()
    assert subjects(sink) == sorted([real.job_id, marker.job_id, forged.job_id])


def test_while_cos_is_down_callbacks_are_answered_and_wait_through_the_pruner_then_go_out_once(
    database: Target, standin: CosStandIn, sink: Sink, tmp_path: Path
) -> None:
    jobs = [Job(job_id(10 + n), CREATED) for n in range(5)]
    standin.add(*jobs)
    standin.fail_with(503)
    server = serve(database, standin, sink, tmp_path, "--retention", "1s", "--prune-interval", "1s")
    try:
        post(server, *jobs)
        wait_until(lambda: standin.count("/jobs/") >= 2, what="the confirmer trying COS (and failing) twice")
        # The pruner passed over them (their raw callbacks are gone) and left every delivery waiting.
        wait_until(lambda: not rows(database, "SELECT id FROM callbacks"), what="the pruner")
        assert deliveries(server, "confirming") == 5
        assert sink.to("/ok") == []
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert 'relay_cos_confirm_waiting{source="media"} 5.0' in metrics
        assert 'relay_cos_confirm_failures_total{kind="throttled",source="media"}' in metrics
        standin.recover()
        sink.wait_for("/ok", 5)
    finally:
        output = server.stop()
    assert subjects(sink) == sorted(job.job_id for job in jobs)
    assert output.count("confirming media's callbacks failed") == 1  # logged once, not at every retry
    assert CREDENTIALS.secret_key not in output


def test_callbacks_waiting_for_cos_when_serve_is_killed_are_confirmed_and_delivered_after_the_restart(
    database: Target, standin: CosStandIn, sink: Sink, tmp_path: Path
) -> None:
    jobs = [Job(job_id(20 + n), CREATED) for n in range(4)]
    standin.add(*jobs)
    standin.fail_with(503)
    server = serve(database, standin, sink, tmp_path)
    try:
        post(server, *jobs)
        wait_until(lambda: standin.count("/jobs/") >= 1, what="the confirmer trying COS")
        server.stop(signal.SIGKILL)
        standin.recover()
        server = serve(database, standin, sink, tmp_path)
        sink.wait_for("/ok", 4)
        wait_until(lambda: deliveries(server, "delivered") == 4, what="every delivery recorded")
    finally:
        server.stop()
    assert subjects(sink) == sorted(job.job_id for job in jobs)
