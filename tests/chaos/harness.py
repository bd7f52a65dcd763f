"""What the chaos tests share: the long-run switch, result files, a retrying COS-like sender, database peeks."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from relay.store import store_for
from relay.store.records import PostgresUrl, Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, job_body
from tests.databases import values
from tests.live import ProcessServer

RESULTS = Path(__file__).parent / "results"
LONG_ENV = "RELAY_CHAOS_LONG"
#: Tokens on the command line, so a restarted gateway keeps them and nothing is printed.
TOKEN_ARGS = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN)
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def long_mode(config: pytest.Config) -> bool:
    """``--chaos-long`` (registered by tests/chaos/conftest.py) or RELAY_CHAOS_LONG=1."""
    flag = bool(config.getoption("--chaos-long", default=False))
    return flag or os.environ.get(LONG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def record(name: str, figures: dict[str, Any]) -> None:
    """Print the figures and keep them in tests/chaos/results/<name>.json for docs/reliability.md."""
    RESULTS.mkdir(exist_ok=True)
    stamped = {"test": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(stamped, indent=2, sort_keys=False) + "\n")
    print(f"\n{name}: " + ", ".join(f"{key}={value}" for key, value in figures.items()))


#: Marks a figure measured on PostgreSQL in a dict of figures shared by a module's runs on both backends.
POSTGRES_CASE = " (PostgreSQL)"


def case(name: str, db: Target) -> str:
    """A figure's name in a shared dict: `record_cases` files the PostgreSQL ones apart."""
    return name + POSTGRES_CASE if isinstance(db, PostgresUrl) else name


def record_cases(name: str, found: dict[str, dict[str, object]]) -> None:
    """`record` the SQLite figures as ``name`` and the PostgreSQL ones as ``name``_postgres."""
    on_sqlite = {key: value for key, value in found.items() if not key.endswith(POSTGRES_CASE)}
    on_postgres = {
        key.removesuffix(POSTGRES_CASE): value for key, value in found.items() if key.endswith(POSTGRES_CASE)
    }
    if on_sqlite:
        record(name, on_sqlite)
    if on_postgres:
        record(f"{name}_postgres", on_postgres)


def gateway(db: Target, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> ProcessServer:
    """``cos-relay serve`` for loopback subscribers, quiet unless something goes wrong."""
    base = {"RELAY_ALLOW_NETWORKS": "127.0.0.0/8", "RELAY_POLL_INTERVAL": "0.2"}
    return ProcessServer(db, args=(*TOKEN_ARGS, "--log-level", "warning", *args), env={**base, **(env or {})})


def scalar(db: Target, sql: str, *params: object) -> Any:
    return values(db, sql, *params)[0][0]


def column(db: Target, sql: str, *params: object) -> list[Any]:
    return [row[0] for row in values(db, sql, *params)]


def unfinished_deliveries(db: Target) -> int:
    """Deliveries still owed, rows and the event log's alike (a delivery of the log has no row until it fails: the
    store counts both). Pending, in flight, then pending again: one that moves between the two while they are read
    is counted at least once."""
    with store_for(db) as store:
        return sum(store.count_deliveries(state) for state in ("pending", "in_flight", "pending"))


def intact(db: Target) -> bool:
    """SQLite's integrity check of the file; on PostgreSQL, amcheck over every B-tree index of the gateway's
    tables (the heap is recovered from PostgreSQL's own WAL)."""
    if isinstance(db, PostgresUrl):
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            indexes = conn.execute(
                "SELECT c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam"
                " WHERE n.nspname = 'public' AND a.amname = 'btree'"
            ).fetchall()
            for (oid,) in indexes:
                conn.execute("SELECT bt_index_check(%s::oid::regclass, true)", (oid,))  # raises on corruption
            return bool(indexes)
    return integrity(db) == "ok"


def integrity(db: Path) -> str:
    """SQLite's own verdict on the file ("ok", or what is wrong)."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def named(name: str, db: Target) -> str:
    """A result file's name: the SQLite run keeps the plain name, the PostgreSQL run gets ``_postgres``."""
    return f"{name}_postgres" if isinstance(db, PostgresUrl) else name


@dataclass
class Sender:
    """Posts callbacks with distinct JobIds at a steady rate from a thread, retrying each one like COS does:
    until it gets a 200 or ``give_up`` seconds pass (then it counts as not acknowledged)."""

    url: str
    rate: float
    give_up: float = 60.0
    first: int = 0
    acknowledged: list[int] = field(default_factory=list)
    unacknowledged: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    requests: int = 0
    #: Seconds from a callback's first try to its 200, for the callbacks that got one.
    latencies: list[float] = field(default_factory=list)
    #: time.monotonic() of each acknowledgement, by callback number.
    acknowledged_at: dict[int, float] = field(default_factory=dict)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def sent(self) -> int:
        return len(self.acknowledged) + len(self.unacknowledged)

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._run, name="cos-sender", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Send no new callback; the one in progress still gets its retries."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.give_up + 30)
            assert not self._thread.is_alive(), "the sender did not stop"

    def _run(self) -> None:
        number = self.first
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stopping.is_set():
                self._send(client, number)
                number += 1
                next_at += 1 / self.rate
                self._stopping.wait(max(0.0, next_at - time.monotonic()))

    def _send(self, client: httpx.Client, number: int) -> None:
        body = job_body(number)
        started = time.monotonic()
        while time.monotonic() - started < self.give_up:
            self.requests += 1
            try:
                response = client.post(
                    f"/cos/callback?token={CALLBACK_TOKEN}", content=body, headers={"Content-Type": "application/xml"}
                )
            except httpx.TransportError:
                self.transport_errors += 1
            else:
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    self.acknowledged.append(number)
                    self.acknowledged_at[number] = time.monotonic()
                    self.latencies.append(self.acknowledged_at[number] - started)
                    return
            time.sleep(0.1)
        self.unacknowledged.append(number)
