"""The database stays bounded under hostile traffic, against a real ``cos-relay serve`` on both backends: a
replayed callback keeps a reference to the first copy of its bytes, not a copy of them; a job's Message is
stored once in its records; a paused subscriber's backlog stops at RELAY_MAX_BACKLOG, its oldest deliveries
dropped, counted, listed and alertable."""

from __future__ import annotations

import random
import string
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.store import store_for
from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, callback_url, job_body, job_id
from tests.databases import values
from tests.live import ProcessServer, wait_until
from tests.procfs import MIB
from tests.sink import Sink

TOKENS = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--allow-networks", "127.0.0.0/8")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
XML = {"Content-Type": "application/xml"}


@pytest.fixture
def server(database: Target) -> Iterator[ProcessServer]:
    running = ProcessServer(database, args=TOKENS).start()
    yield running
    running.stop()


def stored_body_bytes(db: Target) -> int:
    return int(values(db, "SELECT coalesce(sum(length(body)), 0) FROM callbacks")[0][0])


@pytest.mark.slow
@pytest.mark.both_backends
def test_a_replayed_callback_stores_its_body_once_and_each_replay_shows_it(
    server: ProcessServer, database: Target
) -> None:
    body = job_body(1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post(callback_url(), content=body, headers=XML).json() == {"status": "accepted"}
        first = stored_body_bytes(database)
        for _ in range(20):
            assert client.post(callback_url(), content=body, headers=XML).json() == {"status": "duplicate"}
        # A duplicate with other bytes (the same job state, spaced differently) is a piece of its own: kept.
        assert client.post(callback_url(), content=body + b"\n", headers=XML).json() == {"status": "duplicate"}
        listed = client.get(
            "/api/callbacks",
            params={"outcome": "duplicate", "limit": 50},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ).json()["items"]
    assert stored_body_bytes(database) < 2.5 * first  # the first copy and the one with other bytes, not 22
    assert len(listed) == 21
    assert all(item["body_prefix"] and body.decode().startswith(item["body_prefix"]) for item in listed)
    assert {item["size"] for item in listed} == {len(body), len(body) + 1}
    assert len({item["dedup_key"] for item in listed}) == 1  # the same items: the first copy's keys
    assert job_id(1) in listed[0]["dedup_key"]


@pytest.mark.slow
@pytest.mark.both_backends
def test_a_jobs_message_is_stored_once_in_its_records_and_read_back_as_sent(
    server: ProcessServer, database: Target
) -> None:
    message = "".join(random.Random(22).choices(string.ascii_letters + string.digits, k=4096))
    body = job_body(1).replace(b"<Message/>", f"<Message>{message}</Message>".encode())
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as client:
        assert client.post(callback_url(), content=body, headers=XML).json() == {"status": "accepted"}
        job = client.get(f"/api/jobs/{job_id(1)}").json()
        listed = client.get("/api/jobs").json()["items"]
    assert job["message"] == job["detail"]["Message"] == job["history"][-1]["message"] == listed[0]["message"]
    assert job["message"] == message
    assert job["detail"]["Input"]["Object"] == job["input"]["object"]
    # The history row holds it; the job's row and its detail do not copy it.
    assert values(database, "SELECT message FROM job_states") == [(message,)]
    [(kept, detail)] = values(database, "SELECT message, detail FROM jobs")
    stored = zlib.decompress(detail) if isinstance(database, Path) else detail.encode()
    assert kept is None
    assert message.encode() not in stored


def deliveries(http: httpx.Client, state: str) -> list[dict[str, object]]:
    return list(http.get("/api/deliveries", params={"state": state, "limit": 100}).json()["items"])


def metric(http: httpx.Client, line_start: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
def test_a_paused_subscribers_backlog_stops_at_its_bound_and_every_drop_is_counted_and_listed(
    database: Target, sink: Sink
) -> None:
    server = ProcessServer(database, args=(*TOKENS, "--max-backlog", "5")).start()
    try:
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as http:
            assert http.post("/api/subscribers", json={"name": "held", "url": f"{sink.url}/ok/held"}).status_code == 201
            assert http.post("/api/subscribers/held/pause").status_code == 200
            for number in range(12):
                answer = http.post(callback_url(), content=job_body(number), headers=XML)
                assert answer.json() == {"status": "accepted"}
            wait_until(lambda: len(deliveries(http, "dropped")) == 7, what="the 7 oldest deliveries dropped")
            pending, dropped = deliveries(http, "pending"), deliveries(http, "dropped")
            # The oldest went, the newest are kept; all 12 acknowledged events are accounted for.
            # (of the event log, they have no row: by their jobs, numbered in the order they came)
            assert max(str(d["subject"]) for d in dropped) < min(str(d["subject"]) for d in pending)
            assert len(pending) == 5
            given_up = 'relay_deliveries_given_up_total{reason="backlog_full",subscriber="held"}'
            assert metric(http, given_up) == 7
            assert metric(http, 'relay_outbox_deliveries{state="dropped"}') == 7
            # A dropped delivery is requeued by hand like a dead one, and arrives once its subscriber resumes.
            # (by subscriber and event: dropped from the event log in bulk, it has no row until then)
            retry = f"/api/subscribers/held/deliveries/{dropped[-1]['event_id']}/retry"
            assert http.post(retry).status_code == 200
            assert http.post("/api/subscribers/held/resume").status_code == 200
            wait_until(lambda: len(sink.to("/ok/held")) == 6, what="the 5 kept and the 1 requeued delivered")
    finally:
        server.stop()


def used_bytes(db: Target) -> int:
    with store_for(db, create=False) as store:
        return store.used_bytes()


@pytest.mark.slow
@pytest.mark.both_backends
def test_under_a_flood_the_size_bound_holds_what_is_owed_and_answers_503_at_the_bound(
    database: Target, sink: Sink
) -> None:
    # The first start makes (or migrates) the database: the bound is set above what it takes empty.
    ProcessServer(database, args=TOKENS).start().stop()
    bound = used_bytes(database) + 2 * MIB
    server = ProcessServer(database, args=(*TOKENS, "--max-db-size", str(bound))).start()
    answers: list[int] = []
    try:
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as http:
            assert http.post("/api/subscribers", json={"name": "held", "url": f"{sink.url}/ok/held"}).status_code == 201
            assert http.post("/api/subscribers/held/pause").status_code == 200
            for number in range(6000):
                answer = http.post(callback_url(), content=job_body(number), headers=XML)
                answers.append(answer.status_code)
                if answer.status_code == 503:
                    assert answer.headers["Retry-After"]
                    assert answer.json()["error"] == "size_bound"
                    break
                assert answer.json() == {"status": "accepted"}
            refused = metric(http, 'relay_callbacks_received_total{outcome="size_bound"}')
            pending = len(http.get("/api/deliveries", params={"state": "pending", "limit": 1}).json()["items"])
            # The oldest raw callbacks go first, from the soft mark (checked each second).
            wait_until(lambda: metric(http, 'relay_pruned_rows_total{kind="callbacks"}') > 0, what="raw callbacks shed")
    finally:
        server.stop()
    accepted = answers.count(200)
    assert answers[-1] == 503  # the bound was reached
    assert refused == 1  # and the refusal counted
    # Nothing acknowledged vanished: every accepted callback's delivery is still owed to the paused subscriber.
    assert pending == 1
    with store_for(database) as store:  # rows or not (the event log's have none)
        assert store.count_deliveries("pending") == accepted
    assert used_bytes(database) <= bound * 1.05
