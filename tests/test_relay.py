"""Relay, end to end: callbacks in, signed CloudEvents out to real subscriber servers on loopback."""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.settings.table import Settings
from relay.store.records import Target
from tests import live
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA, SAMPLE_JOB_ID, callback_url, job_body, job_id
from tests.databases import values
from tests.live import ProcessServer
from tests.sink import Sink, verify

SAMPLES = sorted((DATA / "samples").glob("*.xml"))
TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()
FAILED = (DATA / "samples" / "transcode_failed.xml").read_bytes()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared gateway with subscribers on loopback, quick retries and a quick poll."""
    return settings.replace(allow_networks="127.0.0.0/8", retry_schedule=(0.2, 0.4, 0.6), poll_interval=0.1)


@pytest.fixture
def api(admin: httpx.Client) -> httpx.Client:
    """The admin client on the shared gateway."""
    return admin


def subscribe(api: httpx.Client, name: str, url: str, **options: Any) -> dict[str, Any]:
    response = api.post("/api/subscribers", json={"name": name, "url": url, **options})
    assert response.status_code == 201, response.text
    return dict(response.json())


def post(api: httpx.Client, body: bytes) -> None:
    response = api.post(callback_url(), content=body, headers={"Content-Type": "application/xml"})
    assert response.status_code == 200, response.text


def deliveries(api: httpx.Client, **query: str) -> list[dict[str, Any]]:
    return list(api.get("/api/deliveries", params=query).json()["items"])


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """This file's waits are shorter than the shared default."""
    live.wait_until(check, timeout)


@pytest.mark.both_backends
def test_every_sample_reaches_a_matching_subscriber_signed_and_schema_valid(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    secret = subscribe(api, "all", f"{url}/ok")["secret"]
    for sample in SAMPLES:
        post(api, sample.read_bytes())
    # One event per JobsDetail (multiple_jobs_detail has two), per workflow, per NonExistJobIds set.
    received = recorder.wait_for("/ok", len(SAMPLES) + 1)
    for request in received:
        verify(request, secret)
    types = {request.event["type"] for request in received}
    assert {"cos.job.succeeded", "cos.job.failed", "cos.workflow.succeeded", "cos.job.nonexistent"} <= types
    assert len({request.webhook_id for request in received}) == len(received)


def test_event_carries_cloudevents_attributes_and_typed_data(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "all", f"{url}/ok")
    post(api, TRANSCODE)
    [request] = recorder.wait_for("/ok", 1)
    event = request.event
    assert event["specversion"] == "1.0"
    assert event["type"] == "cos.job.succeeded"
    assert event["subject"] == "j7c12d4be4c935a96bfe3fb23d1a491e9"
    bucket, queue = "examplebucket-1250000000", "pe820cf648126910f305549c39b7b7183"
    assert event["source"] == f"/cos-relay/cos-relay/buckets/{bucket}/queues/{queue}"
    assert event["time"] == "2024-11-05T02:13:41Z"
    assert event["data"]["Operation"]["MediaInfo"]["Format"]["Size"] == 85401276
    assert request.headers["webhook-timestamp"].isdigit()


def test_filters_route_events_and_non_matching_subscribers_get_nothing(api: httpx.Client, sink: Sink) -> None:
    url = sink.url
    subscribe(api, "failures", f"{url}/ok", types=["cos.job.failed"])
    subscribe(api, "snapshots", f"{url}/ok", filters={"tag": "Snapshot"})
    subscribe(api, "uploads", f"{url}/ok", filters={"object_prefix": "uploads/"})
    subscribe(api, "workflows", f"{url}/ok", types=["cos.workflow.*"])
    subscribe(api, "nobody", f"{url}/ok", filters={"bucket": "another-1250000000"})
    for sample in SAMPLES:
        post(api, sample.read_bytes())
    wait_until(lambda: not deliveries(api, state="pending") and not deliveries(api, state="in_flight"))
    by_subscriber: dict[str, set[str]] = {}
    for delivery in deliveries(api, limit="500"):
        assert delivery["state"] == "delivered"
        by_subscriber.setdefault(delivery["subscriber"], set()).add(delivery["event_type"])
    assert by_subscriber["failures"] == {"cos.job.failed"}
    assert by_subscriber["workflows"] == {"cos.workflow.succeeded"}
    assert "nobody" not in by_subscriber
    assert len(deliveries(api, subscriber="snapshots")) == 1
    uploads = deliveries(api, subscriber="uploads")
    assert uploads
    for delivery in uploads:
        assert api.get(f"/api/jobs/{delivery['subject']}").json()["input"]["object"].startswith("uploads/")


def test_duplicate_callback_creates_no_second_event(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "all", f"{url}/ok", max_in_flight=1)  # in order: a second event would arrive before the marker
    post(api, TRANSCODE)
    post(api, TRANSCODE)
    post(api, job_body(1))  # the marker
    received = recorder.wait_for("/ok", 2)
    assert [request.event["subject"] for request in received] == [SAMPLE_JOB_ID.decode(), job_id(1)]
    assert len(deliveries(api)) == 2


def test_5xx_is_retried_on_schedule_until_dead_with_every_attempt_recorded(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "broken", f"{url}/fail", store_response=True)
    post(api, TRANSCODE)
    received = recorder.wait_for("/fail", 4)  # the first attempt and three retries (schedule 0.2, 0.4, 0.6)
    wait_until(lambda: deliveries(api)[0]["state"] == "dead")
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(received)]
    assert all(gap >= 0.15 for gap in gaps), gaps  # jitter is ±20% of 0.2 s at the least
    [delivery] = deliveries(api)
    detail = api.get(f"/api/deliveries/{delivery['id']}").json()
    assert [attempt["status"] for attempt in detail["attempts_log"]] == [500] * 4
    assert [attempt["trigger"] for attempt in detail["attempts_log"]] == ["first", "retry", "retry", "retry"]
    assert detail["attempts_log"][0]["response_body"] == "boom"
    assert len({request.webhook_id for request in received}) == 1  # retries reuse the event id


def test_flaky_subscriber_gets_the_event_after_retries(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    secret = subscribe(api, "flaky", f"{url}/flaky/2")["secret"]
    post(api, TRANSCODE)
    received = recorder.wait_for("/flaky/2", 3)
    wait_until(lambda: deliveries(api)[0]["state"] == "delivered")
    verify(received[-1], secret)


@pytest.mark.parametrize(
    ("path", "outcome"),
    [("/redirect", "http_3xx"), ("/throttle/1", "http_429"), ("/gone", "http_410"), ("/nothing", "http_4xx")],
)
def test_failure_statuses_are_classified(path: str, outcome: str, api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "s", f"{url}{path}")
    post(api, TRANSCODE)
    recorder.wait_for(path, 1)
    wait_until(lambda: deliveries(api)[0]["last_outcome"] == outcome)


def test_redirect_is_not_followed(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "s", f"{url}/redirect")
    post(api, TRANSCODE)
    recorder.wait_for("/redirect", 2)
    assert {request.path for request in recorder.requests} == {"/redirect"}


def test_410_disables_the_subscriber_at_once_and_holds_its_deliveries(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "gone", f"{url}/gone")
    post(api, TRANSCODE)
    recorder.wait_for("/gone", 1)
    wait_until(lambda: api.get("/api/subscribers/gone").json()["state"] == "disabled")
    subscriber = api.get("/api/subscribers/gone").json()
    assert "410" in subscriber["disabled_reason"]
    subscribe(api, "marker", f"{url}/ok/marker")
    post(api, job_body(1))
    # The claim that sent the marker its event passed over the disabled subscriber's delivery.
    recorder.wait_for("/ok/marker", 1)
    assert len(recorder.to("/gone")) == 1
    assert {d["state"] for d in deliveries(api, subscriber="gone")} == {"pending"}


def test_connection_refused_and_timeout_are_retried(settings: Settings, sink: Sink, api: httpx.Client) -> None:
    url = sink.url
    subscribe(api, "refused", "http://127.0.0.1:9/", retry_schedule=[0.1])
    subscribe(api, "hangs", f"{url}/hang", timeout=0.5, retry_schedule=[0.1])
    post(api, TRANSCODE)
    wait_until(lambda: {d["state"] for d in deliveries(api)} == {"dead"}, timeout=15)
    outcomes = {d["subscriber"]: d["last_outcome"] for d in deliveries(api)}
    assert outcomes == {"refused": "connection_error", "hangs": "timeout"}


def test_a_subscriber_that_never_answers_does_not_slow_another(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "hangs", f"{url}/hang", timeout=30, max_in_flight=2)
    subscribe(api, "healthy", f"{url}/ok")
    started = time.monotonic()
    for number in range(20):
        post(api, job_body(number))
    recorder.wait_for("/ok", 20, timeout=10)
    assert time.monotonic() - started < 10
    assert len(recorder.to("/hang")) == 2  # its own limit holds the rest back


def test_max_in_flight_one_delivers_in_strict_order(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "ordered", f"{url}/flaky/1", max_in_flight=1)
    for number in range(5):
        post(api, job_body(number))
    received = recorder.wait_for("/flaky/1", 6)
    subjects = [request.event["subject"] for request in received]
    # The first event fails once and is retried before anything after it is sent.
    assert subjects == [f"j{0:032x}"] + [f"j{n:032x}" for n in range(5)]


def test_pause_holds_deliveries_and_resume_sends_them(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "p", f"{url}/ok")
    assert api.post("/api/subscribers/p/pause").json()["state"] == "paused"
    subscribe(api, "marker", f"{url}/ok/marker")
    post(api, TRANSCODE)
    # The claim that sent the marker its event passed over the paused subscriber's delivery.
    recorder.wait_for("/ok/marker", 1)
    assert recorder.to("/ok") == []
    assert deliveries(api, subscriber="p")[0]["state"] == "pending"
    assert api.post("/api/subscribers/p/resume").json()["state"] == "enabled"
    recorder.wait_for("/ok", 1)


def test_removing_a_subscriber_cancels_its_pending_deliveries_visibly(api: httpx.Client, sink: Sink) -> None:
    url = sink.url
    subscribe(api, "r", f"{url}/ok")
    api.post("/api/subscribers/r/pause")
    post(api, TRANSCODE)
    removed = api.delete("/api/subscribers/r").json()
    assert removed["cancelled_deliveries"] == 1
    assert [d["state"] for d in deliveries(api, state="cancelled")] == ["cancelled"]
    assert api.get("/api/subscribers/r").status_code == 404


def test_rotated_secret_signs_with_old_and_new_during_the_grace_period(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    old = subscribe(api, "rot", f"{url}/ok")["secret"]
    rotated = api.post("/api/subscribers/rot/rotate-secret").json()
    new = rotated["secret"]
    assert new != old
    assert rotated["previous_secret_expires_at"]
    post(api, TRANSCODE)
    [request] = recorder.wait_for("/ok", 1)
    verify(request, old)
    verify(request, new)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(request.body, request.headers)


def test_bulk_recover_requeues_dead_deliveries_since_a_time(api: httpx.Client, sink: Sink) -> None:
    url = sink.url
    subscribe(api, "down", f"{url}/flaky/8", retry_schedule=[0.1])
    for number in range(3):
        post(api, job_body(number))
    wait_until(lambda: len(deliveries(api, state="dead")) == 3)
    assert api.post("/api/subscribers/down/recover", params={"since": "1h"}).json()["requeued"] == 3
    wait_until(lambda: len(deliveries(api, state="delivered")) == 3)
    for delivery in deliveries(api):
        triggers = [a["trigger"] for a in api.get(f"/api/deliveries/{delivery['id']}").json()["attempts_log"]]
        assert triggers[:2] == ["first", "retry"]
        assert "manual" in triggers


def test_single_delivery_retry_sends_it_again_with_the_same_id(api: httpx.Client, sink: Sink) -> None:
    recorder, url = sink, sink.url
    subscribe(api, "again", f"{url}/ok")
    post(api, TRANSCODE)
    [first] = recorder.wait_for("/ok", 1)
    wait_until(lambda: deliveries(api)[0]["state"] == "delivered")
    # Delivered in order from the event log: no row (id null), addressed by subscriber and event.
    event_id = deliveries(api)[0]["event_id"]
    assert api.post(f"/api/subscribers/again/deliveries/{event_id}/retry").status_code == 200
    second = recorder.wait_for("/ok", 2)[1]
    assert second.webhook_id == first.webhook_id


@pytest.mark.slow
@pytest.mark.both_backends
def test_sigkill_while_deliveries_are_in_flight_loses_nothing(database: Target, sink: Sink) -> None:
    recorder, url = sink, sink.url
    env = {"RELAY_ALLOW_NETWORKS": "127.0.0.0/8", "RELAY_RETRY_SCHEDULE": "0.2,0.5,1", "RELAY_POLL_INTERVAL": "0.1"}
    args = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN)
    db = database
    server = ProcessServer(db, args=args, env=env).start()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers) as api:
        subscribe(api, "slow", f"{url}/slow/0.5", timeout=5, max_in_flight=4)
        for number in range(30):
            post(api, job_body(number))
    recorder.wait_for("/slow/0.5", 2)
    server.stop(signal.SIGKILL)
    # In flight: rows, and first attempts of the event log out under a lease of its cursor (no row).
    in_flight = values(
        db,
        "SELECT (SELECT count(*) FROM deliveries WHERE state = 'in_flight')"
        " + (SELECT coalesce(sum(outstanding), 0) FROM leases)",
    )[0][0]
    assert in_flight > 0  # the kill really interrupted deliveries
    server = ProcessServer(db, args=args, env=env).start()
    try:
        with httpx.Client(base_url=server.url, headers=headers) as api:
            wait_until(lambda: len(deliveries(api, state="delivered", limit="500")) == 30, timeout=60)
            states = Counter(delivery["state"] for delivery in deliveries(api, limit="500"))
    finally:
        server.stop()
    assert len({r.webhook_id for r in recorder.to("/slow/0.5")}) == 30
    assert states == {"delivered": 30}
