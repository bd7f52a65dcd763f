"""Disk bounds, measured on a real ``cos-relay serve`` over a SQLite file.

Run: python -m bench.disk [--jobs 500] [--duplicates 300] [--bound-mib 8] [--seconds 30] [--parts 1,2,3]

1. Bytes per duplicate. One callback of ``--jobs`` JobsDetail is accepted, then replayed ``--duplicates``
   times (each answered ``duplicate``): the pages the database uses (page count less free pages) before
   and after, per replay. Run it against another tree's relay with ``PYTHONPATH=/that/tree python
   bench/disk.py`` to compare (the gateway is started with the same interpreter and environment).
2. A flood with ``--max-db-size`` set. Distinct callbacks of ``--jobs`` JobsDetail from 4 clients for
   ``--seconds`` (``--bound-mib 0``: no bound, as before it existed); the file with its WAL is sampled every
   second: its growth before the soft mark, its largest size against the bound, and how many callbacks were
   accepted and refused (503 ``size_bound``).
3. Bytes stored per accepted callback, on SQLite and on PostgreSQL (a throwaway cluster, tests/postgres.py):
   ``--callbacks`` distinct callbacks of one JobsDetail whose Message is 4,096 characters that compress little
   (as a hostile sender's would), with 1 and with 100 paused subscribers, and the samples (tests/data/samples,
   their ids made distinct) with 1 and with 100. Per callback: what each table takes (SQLite: its pages and its
   indexes', dbstat; PostgreSQL: pg_total_relation_size, with TOAST and indexes), the total against the body's
   size, and where the last callback's Message is stored (its copies in each table's values, packed ones inflated).

To compare with another tree's relay, run it from this tree with ``PYTHONPATH=/that/tree python -m bench.disk``:
the gateways start in a temporary folder, so they import relay from ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import sqlite3
import string
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from bench.process import free_port
from tests.postgres import running

MIB = 1024 * 1024
TOKEN = "bench-disk-callback-token-0123456789"  # noqa: S105 (a throwaway gateway on loopback)
ADMIN = "bench-disk-admin-token-0123456789ab"
XML = {"Content-Type": "application/xml"}
_JOB = b"<JobsDetail><JobId>j%08d</JobId><State>Success</State><Tag>Transcode</Tag></JobsDetail>"


def body(first: int, jobs: int) -> bytes:
    """A callback of ``jobs`` minimal JobsDetail numbered from ``first``."""
    items = b"".join(_JOB % number for number in range(first, first + jobs))
    return b"<Response><EventName>TaskFinish</EventName>" + items + b"</Response>"


@contextlib.contextmanager
def serve(db: Path | str, *args: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "relay", "serve", "--port", str(port), "--db", str(db)]
    tokens = ["--callback-token", TOKEN, "--admin-token", ADMIN, "--log-level", "error", *args]
    # Started away from this tree: relay comes from PYTHONPATH (or the installed one), not the current folder.
    process = subprocess.Popen(
        [*command, *tokens], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir()
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("cos-relay did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def used_bytes(db: Path) -> int:
    """Pages in use (the file's pages less its free ones, WAL checkpointed first)."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free, size = (
            conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count", "page_size")
        )
    return int((pages - free) * size)


def file_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def duplicates(folder: Path, jobs: int, count: int) -> None:
    db = folder / "duplicates.db"
    payload = body(0, jobs)
    with serve(db) as url, httpx.Client(base_url=url, timeout=60) as client:
        post = f"/cos/callback?token={TOKEN}"
        assert client.post(post, content=payload, headers=XML).json() == {"status": "accepted"}
        before = used_bytes(db)
        for _ in range(count):
            assert client.post(post, content=payload, headers=XML).json() == {"status": "duplicate"}
        after = used_bytes(db)
    print(f"1. duplicates: a {len(payload):,}-byte callback of {jobs} JobsDetail, replayed {count} times")
    print(f"   {(after - before) / count:,.0f} bytes on disk per duplicate ({before:,} -> {after:,} bytes used)")


def flood(folder: Path, jobs: int, bound: int, seconds: float) -> None:
    db = folder / "flood.db"
    answers: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    samples: list[tuple[float, int]] = []
    with serve(db, *(("--max-db-size", str(bound)) if bound else ())) as url:

        def client(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                number = worker * 10_000_000
                while not stop.is_set():
                    status = http.post(
                        f"/cos/callback?token={TOKEN}", content=body(number, jobs), headers=XML
                    ).status_code
                    number += jobs
                    with lock:
                        answers[status] = answers.get(status, 0) + 1
                    if status == 503:
                        time.sleep(0.2)  # as COS would: retry later

        threads = [threading.Thread(target=client, args=(worker,)) for worker in range(4)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - started < seconds:
            samples.append((time.monotonic() - started, file_bytes(db)))
            time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join()
    soft = next(((at, size) for at, size in samples if bound and size >= 0.8 * bound), samples[-1])
    growth = soft[1] / soft[0] if soft[0] else 0.0
    print(
        f"2. flood: 4 clients, distinct callbacks of {jobs} JobsDetail,"
        f" --max-db-size {bound or 'none'} for {seconds:g} s"
    )
    print(f"   growth before the soft mark: {growth / MIB:.1f} MiB/s; largest file+WAL: {max(s for _, s in samples):,}")
    print(f"   answers: {dict(sorted(answers.items()))}; used at the end (WAL checkpointed): {used_bytes(db):,}")


SAMPLES = Path(__file__).parent.parent / "tests" / "data" / "samples"
_LARGE = (SAMPLES / "transcode_failed.xml").read_bytes()
#: Tables whose values could hold a callback's text (deliveries, attempts and the rest hold ids and times).
TEXT_TABLES = ("callbacks", "events", "jobs", "job_states", "items")


def hostile_text(seed: int, size: int = 4096) -> str:
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def distinct(sample: bytes, number: int) -> bytes:
    """``sample`` with every 32-hex id (JobId, RunId, queue and template ids) ending in ``number``: a new item."""
    return re.sub(rb"([0-9a-f]{24})[0-9a-f]{8}(?![0-9a-f])", lambda m: m.group(1) + b"%08x" % number, sample)


def large(number: int) -> tuple[bytes, str]:
    """A callback of one failed job whose Message is 4,096 characters that compress little; that Message."""
    message = hostile_text(number)
    old = b"source file is invalid, moov atom not found"
    return distinct(_LARGE, number).replace(old, message.encode()), message


def table_bytes(db: Path | str) -> dict[str, int]:
    """Bytes each table takes on disk with its indexes."""
    if isinstance(db, str):
        with psycopg.connect(db) as conn:
            found = conn.execute(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r'"
                " AND relnamespace = 'public'::regnamespace"
            ).fetchall()
        return {name: int(size) for name, size in found}
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        sizes: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            sizes[table] = sizes.get(table, 0) + int(size)
        return sizes


def every_row(db: Path | str, table: str) -> list[dict[str, object]]:
    query = f"SELECT * FROM {table}"  # noqa: S608 (the bench's own table names)
    if isinstance(db, str):
        with psycopg.connect(db) as server:
            found = server.execute(query.encode())
            names = [column.name for column in found.description or ()]
            return [dict(zip(names, row, strict=True)) for row in found]
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as file:
        cursor = file.execute(query)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]


def copies(db: Path | str, text: str) -> dict[str, int]:
    """How many times ``text`` is stored in each table's values (packed values inflated)."""
    wanted, found = text.encode(), {}
    for table in TEXT_TABLES:
        found[table] = 0
        for row in every_row(db, table):
            for column, value in row.items():
                if isinstance(value, memoryview):
                    value = bytes(value)
                if isinstance(value, bytes) and row.get(f"{column}_packed"):
                    value = zlib.decompress(value)
                if isinstance(value, str):
                    value = value.encode()
                if isinstance(value, bytes):
                    found[table] += value.count(wanted)
    return found


@dataclass(frozen=True)
class Stored:
    """What a gateway stored for ``callbacks`` accepted callbacks, per callback."""

    subscribers: int  # paused, matching every callback
    callbacks: int
    body_bytes: float  # the bodies' mean size
    bytes_per_callback: float  # every table with its indexes (SQLite: pages; PostgreSQL: with TOAST)
    tables: dict[str, float]  # each table's share of it
    message_copies: dict[str, int]  # where the last callback's Message is stored (when it was given)

    @property
    def ratio(self) -> float:
        return self.bytes_per_callback / self.body_bytes


def measure(db: Path | str, bodies: list[bytes], subscribers: int, message: str | None = None) -> Stored:
    """``bodies`` posted to a gateway over ``db`` (a file, or a PostgreSQL URL) with ``subscribers`` paused ones."""
    args = ("--allow-networks", "127.0.0.0/8")
    with serve(db, *args) as url, httpx.Client(base_url=url, timeout=60) as client:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        for number in range(subscribers):
            name = f"hook{number}"
            hook = {"name": name, "url": "http://127.0.0.1:9/hook"}
            assert client.post("/api/subscribers", json=hook, headers=admin).status_code == 201
            assert client.post(f"/api/subscribers/{name}/pause", headers=admin).status_code == 200
        before = table_bytes(db)
        for payload in bodies:
            answer = client.post(f"/cos/callback?token={TOKEN}", content=payload, headers=XML).json()
            assert answer == {"status": "accepted"}, answer
        after = table_bytes(db)
    grown = {table: (after.get(table, 0) - before.get(table, 0)) / len(bodies) for table in after}
    where = {table: n for table, n in copies(db, message).items() if n} if message is not None else {}
    return Stored(
        subscribers=subscribers,
        callbacks=len(bodies),
        body_bytes=sum(len(payload) for payload in bodies) / len(bodies),
        bytes_per_callback=sum(grown.values()),
        tables=grown,
        message_copies=where,
    )


def stored(db: Path | str, label: str, bodies: list[bytes], subscribers: int, message: str | None) -> None:
    found = measure(db, bodies, subscribers, message)
    shown = ("callbacks", "events", "deliveries", "jobs", "job_states", "items")
    parts = ", ".join(f"{table} {found.tables.get(table, 0):,.0f}" for table in shown)
    other = sum(size for table, size in found.tables.items() if table not in shown)
    print(f"   {label}: {found.callbacks} callbacks of {found.body_bytes:,.0f} bytes on average")
    print(
        f"     {found.bytes_per_callback:,.0f} bytes per callback = {found.ratio:.2f} x the body ({parts},"
        f" the rest {other:,.0f})"
    )
    if message is not None:
        where = found.message_copies
        print(f"     the last callback's Message is stored {sum(where.values())} times: {where}")


def samples(callbacks: int, first: int) -> list[bytes]:
    """About ``callbacks`` callbacks as COS sends them: the samples in turn, every one a new job, ids from ``first``."""
    paths = sorted(SAMPLES.glob("*.xml"))
    rounds = max(1, callbacks // len(paths))
    return [
        distinct(path.read_bytes(), first + n * len(paths) + i) for n in range(rounds) for i, path in enumerate(paths)
    ]


def stored_per_callback(folder: Path, callbacks: int) -> None:
    count = len(list(SAMPLES.glob("*.xml")))
    rounds = max(1, callbacks // count)
    cases: list[tuple[str, list[bytes], int, str | None]] = []
    made = [large(number) for number in range(callbacks)]
    cases.append(("4 KiB Message, 1 subscriber", [payload for payload, _ in made], 1, made[-1][1]))
    made = [large(callbacks + number) for number in range(callbacks)]
    cases.append(("4 KiB Message, 100 subscribers", [payload for payload, _ in made], 100, made[-1][1]))
    cases.append((f"the {count} samples, {rounds} times each", samples(callbacks, 10_000), 1, None))
    # Issue 26's row: bytes per callback with 100 matching subscribers, for callbacks as COS sends them.
    cases.append((f"the {count} samples, {rounds} times each, 100 subscribers", samples(callbacks, 20_000), 100, None))
    print(f"3. stored per accepted callback ({callbacks} callbacks a case)")
    print("  SQLite")
    for number, (label, payloads, subscribers, message) in enumerate(cases):
        stored(folder / f"stored{number}.db", label, payloads, subscribers, message)
    with running() as cluster:
        print("  PostgreSQL")
        for number, (label, payloads, subscribers, message) in enumerate(cases):
            cluster.psql(f"CREATE DATABASE stored{number}")
            stored(cluster.url(f"stored{number}"), label, payloads, subscribers, message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--duplicates", type=int, default=300)
    parser.add_argument("--bound-mib", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--callbacks", type=int, default=200)
    parser.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 3")
    options = parser.parse_args()
    parts = set(options.parts.split(","))
    print(f"relay from {os.environ.get('PYTHONPATH') or 'this tree'}")
    with tempfile.TemporaryDirectory() as folder:
        if "1" in parts:
            duplicates(Path(folder), options.jobs, options.duplicates)
        if "2" in parts:
            flood(Path(folder), options.jobs, int(options.bound_mib * MIB), options.seconds)
        if "3" in parts:
            stored_per_callback(Path(folder), options.callbacks)


if __name__ == "__main__":
    main()
