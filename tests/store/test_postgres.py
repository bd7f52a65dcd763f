"""What only the PostgreSQL backend has: URLs for --db (their password never shown), migrations under a lock,
refusing a database cos-relay never set up, and stores in several processes sharing one database."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.callback import IngestResult, Received
from relay.domain.clock import utc_now
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.ingest import Ingest, Reader
from relay.settings.table import Settings
from relay.store import store_for
from relay.store.ops.log import LOG_LOCK
from relay.store.ops.subscribers import SUBSCRIBERS_LOCK
from relay.store.postgres.schema import STEPS
from relay.store.postgres.store import PostgresStore
from relay.store.records import PostgresUrl
from tests.conftest import (
    ADMIN_TOKEN,
    CALLBACK_TOKEN,
    callback_schema,
    callback_url,
    fresh_database,
    ingest,
    job_body,
)
from tests.databases import rows
from tests.live import ProcessServer
from tests.mistakes.commands import cos_relay
from tests.postgres import Cluster


def test_a_postgres_url_is_never_taken_for_a_file_path(tmp_path: Path, postgres: Cluster) -> None:
    os.chdir(tmp_path)
    url = fresh_database(postgres)
    assert Settings(db_path=PostgresUrl(url.url)).db_path == url
    for scheme in ("postgresql://", "postgres://"):
        text = url.url.replace("postgresql://", scheme)
        result = CliRunner().invoke(main, ["jobs", "--db", text])
        assert result.exit_code == 0, result.output
    assert list(tmp_path.iterdir()) == []


def test_a_url_is_shown_without_its_password() -> None:
    url = PostgresUrl("postgresql://relay:hunter2@db.internal:5432/relay")
    assert str(url) == "postgresql://relay:***@db.internal:5432/relay"
    assert "hunter2" not in str(Settings(db_path=url).db_path)


def test_replicas_starting_together_on_an_empty_database_migrate_it_once(postgres: Cluster) -> None:
    url = postgres.new_database()

    def start() -> None:
        with store_for(url):
            pass

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: start(), range(4)))
    applied = rows(url, "SELECT version FROM relay_migrations ORDER BY version")
    assert [row["version"] for row in applied] == [version for version, _, _ in STEPS]


@pytest.mark.parametrize(
    "command", [["jobs"], ["subscribers", "list"], ["deliveries", "list"], ["tokens"]], ids=" ".join
)
def test_a_command_other_than_serve_refuses_a_database_cos_relay_never_set_up(
    postgres: Cluster, command: list[str]
) -> None:
    url = postgres.new_database()
    result = CliRunner().invoke(main, [*command, "--db", url.url])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: no database at {url}: start `cos-relay serve --db {url}` first, or pass --db (or RELAY_DB) "
        "naming the database the server uses"
    ]
    assert rows(url, "SELECT to_regclass('relay_migrations') AS t") == [{"t": None}]


@pytest.mark.parametrize("command", ["jobs", "serve"])
@pytest.mark.slow
def test_an_unreachable_database_is_one_line_without_its_password_and_exit_1(postgres: Cluster, command: str) -> None:
    url = f"postgresql://postgres:pg-password-x7Q2@127.0.0.1:{postgres.port + 1}/nowhere"
    result = cos_relay(command, "--db", url, env={"RELAY_STATEMENT_TIMEOUT": "2"})
    assert "pg-password-x7Q2" not in result.stdout + result.stderr
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("Error: cannot open the database at postgresql://")
    assert "Traceback" not in result.stderr


def test_two_stores_never_lease_the_same_delivery_and_strict_order_holds_across_them(postgres: Cluster) -> None:
    url = fresh_database(postgres)
    with store_for(url) as store:
        for name, lanes in (("strict", 1), ("wide", 50)):
            spec = SubscriberSpec(name, f"http://127.0.0.1:9/{name}", generate_secret(), Filter(), max_in_flight=lanes)
            store.add_subscriber(spec, utc_now())
    ingest(url, *(job_body(number) for number in range(40)))
    first, second = PostgresStore(url), PostgresStore(url)
    with first, second:

        async def race() -> list[list[tuple[int, str]]]:
            claims = await asyncio.gather(*(s.claim(utc_now(), LEASE_MARGIN, 100) for s in (first, second) * 3))
            # First attempts from the event log: no row id, each delivery known by subscriber and event.
            return [[(claim.subscriber_id, claim.event_id) for claim in batch] for batch in claims]

        batches = asyncio.run(race())
        in_flight = first.list_deliveries(subscriber="strict", state="in_flight").items
    leased = [delivery for batch in batches for delivery in batch]
    assert len(leased) == len(set(leased)) == 41  # every "wide" delivery once, and only the head of "strict"
    assert len(in_flight) == 1


def test_a_dead_replicas_lease_expires_and_another_replica_takes_the_delivery(postgres: Cluster) -> None:
    url = fresh_database(postgres)
    with store_for(url) as store:
        spec = SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter(), timeout=5)
        store.add_subscriber(spec, utc_now())
    ingest(url, job_body(1))
    start = utc_now()
    dead = PostgresStore(url)
    with dead:
        [leased] = asyncio.run(dead.claim(start, LEASE_MARGIN, 10))  # and then it dies, never finishing
    with PostgresStore(url) as survivor:
        assert asyncio.run(survivor.claim(start, LEASE_MARGIN, 10)) == []  # the lease still holds
        expired = start + timedelta(seconds=5) + LEASE_MARGIN
        [taken] = asyncio.run(survivor.claim(expired, LEASE_MARGIN, 10))
    assert (taken.subscriber_id, taken.event_id) == (leased.subscriber_id, leased.event_id)
    assert taken.trigger == "retry"


@pytest.mark.slow
def test_the_database_password_never_reaches_logs_or_responses(postgres: Cluster) -> None:
    # The throwaway cluster trusts loopback, so any password connects: what is checked is where it shows.
    password = "pg-password-" + "x7Q2" * 4
    database = fresh_database(postgres)
    user, _, host = database.url.removeprefix("postgresql://").partition("@")
    url = PostgresUrl(f"postgresql://{user}:{password}@{host}")
    args = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--log-level", "debug")
    server = ProcessServer(url, args=args).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as api:
            api.post(callback_url(), content=job_body(1)).raise_for_status()
            answers = [api.get(path) for path in ("/api/jobs", "/api/callbacks", "/readyz", "/healthz", "/metrics")]
    finally:
        output = server.stop()
    assert password not in output
    for answer in answers:
        assert password not in answer.text + str(answer.headers), answer.request.url


def test_large_values_are_compressed_with_lz4_where_the_server_has_it(postgres: Cluster) -> None:
    """The store's connections compress a callback's body, its event's and its job's detail with lz4 (cheaper for
    the server than the default pglz); values stored before keep theirs and read the same."""
    url = fresh_database(postgres)
    with psycopg.connect(url.url, autocommit=True) as conn:
        conn.execute(b"ALTER TABLE callbacks ALTER COLUMN body SET COMPRESSION pglz")  # as the last release stored it
        ingest(url, job_body(1))
        conn.execute(b"ALTER TABLE callbacks ALTER COLUMN body SET COMPRESSION DEFAULT")
    ingest(url, job_body(2))
    compressed = rows(
        url,
        "SELECT pg_column_compression(c.body) AS body, pg_column_compression(e.body) AS event,"
        " pg_column_compression(j.detail) AS detail FROM callbacks c JOIN events e ON e.callback_id = c.id"
        " JOIN jobs j ON j.callback_id = c.id ORDER BY c.id",
    )
    assert [row["body"] for row in compressed] == ["pglz", "lz4"]
    assert [(row["event"], row["detail"]) for row in compressed] == [("lz4", "lz4")] * 2
    assert [bytes(row["body"]) for row in rows(url, "SELECT body FROM callbacks ORDER BY id")] == [
        job_body(1),
        job_body(2),
    ]


def test_a_callback_waits_for_a_subscriber_change_in_progress_and_logs_its_events_after_the_head_the_change_read(
    postgres: Cluster,
) -> None:
    """A subscriber change holds the subscribers and the event log alone (`subscribers.lock`, `LOG_LOCK`): a
    callback recorded meanwhile waits before it takes positions, and once the change commits its event lies above
    the head the change read (where a cursor the change made would start): owed to a subscriber added then, never
    slipped below its start. Before the log, the callback's transaction held the subscribers from its start."""
    url = fresh_database(postgres)
    with store_for(url) as store:
        store.add_subscriber(SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter()), utc_now())
        service = Ingest(store, Reader(callback_schema()))

        def one(number: int) -> IngestResult:
            received = Received(utc_now(), "127.0.0.1", "application/xml", job_body(number), "xml")
            return asyncio.run(service.ingest(received))[1]

        assert one(1).events == 1
        with psycopg.connect(url.url) as change, ThreadPoolExecutor(1) as thread:
            change.execute(b"SELECT pg_advisory_xact_lock(%s), pg_advisory_xact_lock(%s)", (SUBSCRIBERS_LOCK, LOG_LOCK))
            head = change.execute(b"SELECT max(position) FROM events").fetchone()
            recording = thread.submit(one, 2)
            waiting = "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            deadline = time.monotonic() + 30
            while rows(url, waiting)[0]["n"] == 0 and not recording.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not recording.done()  # it waits for the change
            change.commit()
            assert recording.result(timeout=30).events == 1
        assert head == (1,)
        assert rows(url, "SELECT position FROM events ORDER BY position") == [{"position": 1}, {"position": 2}]
