"""Two `cos-relay serve` replicas on one PostgreSQL database: callbacks taken by either, every delivery
attempted by one replica once, strict order held across them, tokens and subscribers shared, no file made, and a
replica delivering while another records a callback for the same subscriber."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.store.records import PostgresUrl
from tests.conftest import job_body, job_id
from tests.databases import rows
from tests.live import ProcessServer, wait_until
from tests.postgres import Cluster
from tests.sink import Sink

CALLBACKS = 40
#: Short polls: a replica that missed a notification still finds the work quickly.
SERVE_ARGS = ("--allow-networks", "127.0.0.0/8", "--poll-interval", "0.5")


@pytest.fixture
def replicas(postgres: Cluster, tmp_path: Path) -> Iterator[tuple[PostgresUrl, list[ProcessServer]]]:
    """Two replicas started at once on an empty database (they race to migrate it), in an empty folder."""
    url = postgres.new_database()
    servers = [ProcessServer(url, args=SERVE_ARGS, cwd=tmp_path) for _ in range(2)]
    for server in servers:
        server.start()
    yield url, servers
    for server in servers:
        server.stop()


def tokens(url: PostgresUrl) -> tuple[str, str]:
    result = CliRunner().invoke(main, ["tokens", "--db", url.url])
    assert result.exit_code == 0, result.output
    found = dict(line.split(": ", 1) for line in result.output.splitlines() if ": " in line)
    return found["callback_token"], found["admin_token"]


@pytest.mark.slow
def test_two_replicas_share_one_database_and_each_delivery_is_attempted_by_one_of_them_once(
    replicas: tuple[PostgresUrl, list[ProcessServer]], sink: Sink, tmp_path: Path
) -> None:
    url, servers = replicas
    callback_token, admin_token = tokens(url)
    admin = {"Authorization": f"Bearer {admin_token}"}
    # A subscriber added through one replica is used by both.
    for name, lanes in (("wide", 10), ("strict", 1)):
        body = {"name": name, "url": f"{sink.url}/ok/{name}", "max_in_flight": lanes}
        added = httpx.post(f"{servers[0].url}/api/subscribers", json=body, headers=admin)
        assert added.status_code == 201, added.text
    listed = httpx.get(f"{servers[1].url}/api/subscribers", headers=admin).json()["items"]
    assert [subscriber["name"] for subscriber in listed] == ["strict", "wide"]
    for number in range(CALLBACKS):
        server = servers[number % 2]  # both take callbacks, with the one token
        response = httpx.post(f"{server.url}/cos/callback?token={callback_token}", content=job_body(number))
        assert response.status_code == 200, response.text

    # Delivered in order from the event log, a delivery has no row: its success attempt is its record, and every
    # attempt is keyed by subscriber and event.
    def delivered() -> bool:
        return len(rows(url, "SELECT id FROM attempts WHERE outcome = 'success'")) == 2 * CALLBACKS

    wait_until(delivered, timeout=60, what="every delivery delivered")
    attempts = rows(url, "SELECT subscriber_id, event_id, count(*) AS n FROM attempts GROUP BY subscriber_id, event_id")
    assert len(attempts) == 2 * CALLBACKS
    assert {row["n"] for row in attempts} == {1}  # one attempt each: never by both replicas
    assert len(sink.requests) == 2 * CALLBACKS
    # Strict order across replicas: "strict" got the events in the order the callbacks were taken.
    strict = [request.event["subject"] for request in sink.requests if request.path == "/ok/strict"]
    assert strict == [job_id(number) for number in range(CALLBACKS)]
    # The outbox gauges come from the database: every replica reports the same.
    gauges = {server.url: outbox_gauges(server) for server in servers}
    assert len(set(gauges.values())) == 1, gauges
    assert 'relay_outbox_deliveries{state="pending"} 0.0' in gauges[servers[0].url]
    # Nothing was written to disk by either replica: the folder they ran in is still empty.
    assert list(tmp_path.iterdir()) == []


def outbox_gauges(server: ProcessServer) -> str:
    text = httpx.get(f"{server.url}/metrics").text
    return "\n".join(line for line in text.splitlines() if line.startswith("relay_outbox_deliveries{"))


@pytest.mark.slow
def test_a_subscribers_rate_holds_across_two_replicas(
    replicas: tuple[PostgresUrl, list[ProcessServer]], sink: Sink
) -> None:
    url, servers = replicas
    callback_token, admin_token = tokens(url)
    admin = {"Authorization": f"Bearer {admin_token}"}
    body = {"name": "paced", "url": f"{sink.url}/ok/paced", "max_in_flight": 16, "rate": "5/s"}
    assert httpx.post(f"{servers[0].url}/api/subscribers", json=body, headers=admin).status_code == 201
    for number in range(20):
        response = httpx.post(
            f"{servers[number % 2].url}/cos/callback?token={callback_token}", content=job_body(number)
        )
        assert response.status_code == 200, response.text
    sink.wait_for("/ok/paced", 20, timeout=60)
    started = sorted(datetime.fromisoformat(row["started_at"]) for row in rows(url, "SELECT started_at FROM attempts"))
    # Both replicas claim (each took callbacks and wakes its own worker); no second held more than the rate (5)
    # and its burst (1): the pacing is in the database they share.
    busiest = max(sum(1 for at in started if start <= at < start + timedelta(seconds=1)) for start in started)
    assert busiest <= 6, busiest


def test_a_replica_delivers_while_another_is_recording_a_callback_for_the_same_subscriber(
    postgres: Cluster, sink: Sink, tmp_path: Path
) -> None:
    url = postgres.new_database()
    server = ProcessServer(url, args=SERVE_ARGS, cwd=tmp_path)
    server.start()
    try:
        callback_token, admin_token = tokens(url)
        body = {"name": "hook", "url": f"{sink.url}/ok/hook"}
        added = httpx.post(
            f"{server.url}/api/subscribers", json=body, headers={"Authorization": f"Bearer {admin_token}"}
        )
        assert added.status_code == 201, added.text
        # What another replica's callback holds until it commits: a key-share lock on the subscriber's row (its
        # deliveries' foreign key). Under saturated ingest one is nearly always open; the worker must not skip.
        with psycopg.connect(url.url) as conn, conn.transaction(force_rollback=True):
            conn.execute(b"SELECT 1 FROM subscribers WHERE name = 'hook' FOR KEY SHARE")
            response = httpx.post(f"{server.url}/cos/callback?token={callback_token}", content=job_body(1))
            assert response.status_code == 200, response.text
            sink.wait_for("/ok/hook", 1, timeout=20)
    finally:
        server.stop()
