"""schemathesis against a real `cos-relay serve` holding jobs, workflow runs, callbacks (refused ones too),
subscribers and deliveries in every state: no answer is a 5xx, and every answer's status, type and body are
the ones the OpenAPI document gives."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.api.openapi import document
from relay.store.records import Target
from tests.conftest import DATA, job_body
from tests.live import ProcessServer, unmeasured, wait_until
from tests.sink import Sink

ROOT = Path(__file__).parents[2]
ADMIN_TOKEN = "schemathesis-admin-qDurSRyyUrfpsPv9juuQYGo7kQMWKDSddrVikU2VCqc"
CALLBACK_TOKEN = "schemathesis-callback--18tpSWHzM1q0db2r6gkjhVNVjwM8JtmS0AQRp5ys54"
RUN_ID = "icf43042c67ab601aa9e79a4f03b42e4c"  # the workflow sample's RunId
JOB_ID = "j7c12d4be4c935a96bfe3fb23d1a491e9"  # the transcode sample's JobId

# The run itself is bounded at 450 s (below): 140 s in the full suite on a quiet machine, 310 s at load 8.
#: PostgreSQL too: what it refuses to store (a NUL in text) or to compare must never be a 500.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(480), pytest.mark.both_backends]
#: Generated cases per operation (the coverage phase's edge cases come on top). The API is the same on both
#: backends; on PostgreSQL the run is there for what only it refuses (a NUL in text, a value it cannot compare),
#: which the coverage phase's edge cases reach, so fewer random ones do: a minute less of the suite.
EXAMPLES = {"sqlite": 100, "postgres": 30}


@pytest.fixture
def sink() -> Iterator[Sink]:
    recorder = Sink().serve()
    yield recorder
    recorder.stop()


@pytest.fixture
def gateway(database: Target, sink: Sink) -> Iterator[ProcessServer]:
    env = {
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "RELAY_ALLOW_NETWORKS": "127.0.0.0/8",  # the sink
        "RELAY_SECRET_GRACE": "3600",
    }
    server = ProcessServer(database, env=env).start()
    try:
        yield server
    finally:
        server.stop()


def seed(api: httpx.Client, sink: Sink) -> None:
    """Subscribers delivered to (one after a granted handshake), failing and paused; every COS sample; refused
    callbacks; deliveries in each state."""
    for name, path, extra in (
        ("delivered", "/ok", {}),
        ("failing", "/fail", {"retry_schedule": [0]}),
        ("held", "/ok", {}),
        ("removed", "/ok", {}),
        ("asks", "/grant/asks", {"handshake": True}),  # a handshake verdict in the subscribers' answers
    ):
        api.post("/api/subscribers", json={"name": name, "url": sink.url + path, **extra}).raise_for_status()
    for held in ("held", "removed"):
        api.post(f"/api/subscribers/{held}/pause").raise_for_status()
    api.post("/api/subscribers/delivered/rotate-secret").raise_for_status()
    callback = f"/cos/callback?token={CALLBACK_TOKEN}"
    for sample in sorted((DATA / "samples").glob("*.xml")):
        api.post(callback, content=sample.read_bytes(), headers={"Content-Type": "application/xml"}).raise_for_status()
    api.post(callback, content=job_body(1, "Failed"), headers={"Content-Type": "application/xml"}).raise_for_status()
    for refused in (b"<Response><Unclosed>", b"<Response/>", b"\x00\x01"):
        assert api.post(callback, content=refused).status_code in (400, 415, 422)
    api.delete("/api/subscribers/removed").raise_for_status()  # its held deliveries: cancelled

    def settled() -> bool:
        states = {d["state"] for d in api.get("/api/deliveries", params={"limit": 500}).json()["items"]}
        return {"delivered", "dead", "pending", "cancelled"} <= states and "in_flight" not in states

    wait_until(settled, what="deliveries delivered, dead, pending and cancelled")


def check_seeded_answers(api: httpx.Client) -> None:
    """The seeded records, read back, are what the document says (schemathesis rarely guesses their ids)."""
    # Imported here, not at the top: importing schemathesis costs each test worker a second at collection.
    import schemathesis

    schema = schemathesis.openapi.from_dict(document())
    deliveries = api.get("/api/deliveries", params={"limit": 500}).json()["items"]
    reads = [
        ("/api/jobs/{job_id}", f"/api/jobs/{JOB_ID}"),
        *(
            (f"/api/jobs/{{job_id}}/{part}", f"/api/jobs/{JOB_ID}/{part}")
            for part in ("history", "callbacks", "deliveries")
        ),
        ("/api/workflows/{run_id}", f"/api/workflows/{RUN_ID}"),
        ("/api/jobs", "/api/jobs?limit=2"),
        ("/api/callbacks", "/api/callbacks"),
        ("/api/subscribers", "/api/subscribers"),
        ("/api/subscribers/{name}/secret", "/api/subscribers/delivered/secret"),
        *(("/api/deliveries/{id}", f"/api/deliveries/{delivery['id']}") for delivery in deliveries if delivery["id"]),
        # Deliveries of the event log have no row (id null): read by subscriber and event (a removed subscriber's
        # are no longer addressable by its name).
        *(
            (
                "/api/subscribers/{name}/deliveries/{event_id}",
                f"/api/subscribers/{d['subscriber']}/deliveries/{d['event_id']}",
            )
            for d in deliveries
            if d["id"] is None and d["state"] != "cancelled"
        ),
    ]
    for template, path in reads:
        response = api.get(path)
        assert response.status_code == 200, path
        schema[template]["GET"].validate_response(response)


def test_schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_give(
    gateway: ProcessServer, sink: Sink, database: Target
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as api:
        seed(api, sink)
        check_seeded_answers(api)
    env = {
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "RELAY_TEST_SINK": f"{sink.url}/ok",
        "RELAY_TEST_JOB": JOB_ID,
        "RELAY_TEST_RUN": RUN_ID,
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(ROOT / "tests" / "api" / "schemathesis.toml"),
            "--no-color",
            "run",
            f"--max-examples={EXAMPLES['sqlite' if isinstance(database, Path) else 'postgres']}",
            f"{gateway.url}/openapi.json",
        ],
        cwd=ROOT,
        # The gateway's coverage is measured; schemathesis's, which runs none of relay, is not (half its CPU).
        env=unmeasured({**gateway.env, **env}),
        capture_output=True,
        text=True,
        timeout=450,
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    printed = gateway.stop()
    assert "Traceback" not in printed, printed[-5000:]
