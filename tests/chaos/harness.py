"""What the chaos tests share: the long-run switch, result files, a retrying COS-like sender, SQLite peeks."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, job_body
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


def gateway(db: Target, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> ProcessServer:
    """``cos-relay serve`` for loopback subscribers, quiet unless something goes wrong."""
    base = {"RELAY_ALLOW_NETWORKS": "127.0.0.0/8", "RELAY_POLL_INTERVAL": "0.2"}
    return ProcessServer(db, args=(*TOKEN_ARGS, "--log-level", "warning", *args), env={**base, **(env or {})})


@contextlib.contextmanager
def read_db(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection next to a running gateway (WAL: never blocks it)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def scalar(db: Path, sql: str, *params: object) -> Any:
    with read_db(db) as conn:
        return conn.execute(sql, params).fetchone()[0]


def column(db: Path, sql: str, *params: object) -> list[Any]:
    with read_db(db) as conn:
        return [row[0] for row in conn.execute(sql, params)]


def unfinished_deliveries(db: Path) -> int:
    return int(scalar(db, "SELECT count(*) FROM deliveries WHERE state != 'delivered'"))


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


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
