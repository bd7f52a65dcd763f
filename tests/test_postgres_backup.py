"""Backup and restore on PostgreSQL with its own tools, as docs/operations.md says: `pg_dump -Fc` of a live
gateway's database, `pg_restore` into a fresh one, and a gateway on the copy resumes the deliveries owed."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from relay.store import store_for
from relay.store.records import PostgresUrl
from tests.conftest import fresh_database
from tests.databases import rows
from tests.live import wait_until
from tests.postgres import BIN, Cluster
from tests.sink import Sink
from tests.test_retention_live import admin, event_ids, post, serve, subscribe

pytestmark = pytest.mark.slow


def pg(tool: str, *args: str) -> None:
    """The cluster's own client tool (the same major version as the server, as pg_dump needs)."""
    done = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_pg_dump_of_a_live_gateway_restores_into_a_fresh_database_and_a_gateway_on_it_sends_what_was_owed(
    postgres: Cluster, sink: Sink, tmp_path: Path
) -> None:
    source, dump = fresh_database(postgres), tmp_path / "cos-relay.dump"
    server = serve(source)
    try:
        with admin(server) as http:
            subscribe(http, sink, "live")
            subscribe(http, sink, "held", paused=True)
        post(server, range(20))
        sink.wait_for("/ok/live", 20)
        # Delivered in order from the event log: no row, its success attempt is its record.
        delivered = "SELECT count(*) AS n FROM attempts WHERE outcome = 'success'"
        wait_until(lambda: rows(source, delivered)[0]["n"] == 20, what="live's deliveries recorded")
        pg("pg_dump", "--format=custom", f"--file={dump}", source.url)  # while the gateway runs
    finally:
        server.stop()
    name = f"restored_{uuid.uuid4().hex}"
    postgres.psql(f"CREATE DATABASE {name}")  # empty: not from the migrated template
    restored = PostgresUrl(postgres.url(name))
    pg("pg_restore", "--no-owner", f"--dbname={restored.url}", str(dump))
    with store_for(restored) as store:  # rows or not (the event log's have none)
        owed = store.count_deliveries("pending")
    assert owed == 20
    again = serve(restored)
    try:
        with admin(again) as http:
            assert len(http.get("/api/jobs", params={"limit": "100"}).json()["items"]) == 20
            assert http.post("/api/subscribers/held/resume").status_code == 200
            sink.wait_for("/ok/held", 20)
        post(again, range(1000, 1001))  # identities restored too: new rows take new ids
        sink.wait_for("/ok/live", 21)
        sink.wait_for("/ok/held", 21)
    finally:
        again.stop()
    assert event_ids(sink, "/ok/held") == event_ids(sink, "/ok/live")  # every one owed, each once
    assert len(event_ids(sink, "/ok/held")) == 21
