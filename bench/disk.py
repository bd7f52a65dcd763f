"""Disk bounds, measured on a real ``cos-relay serve`` over a SQLite file.

Run: python -m bench.disk [--jobs 500] [--duplicates 300] [--bound-mib 8] [--seconds 30]

1. Bytes per duplicate. One callback of ``--jobs`` JobsDetail is accepted, then replayed ``--duplicates``
   times (each answered ``duplicate``): the pages the database uses (page count less free pages) before
   and after, per replay. Run it against another tree's relay with ``PYTHONPATH=/that/tree python
   bench/disk.py`` to compare (the gateway is started with the same interpreter and environment).
2. A flood with ``--max-db-size`` set. Distinct callbacks of ``--jobs`` JobsDetail from 4 clients for
   ``--seconds`` (``--bound-mib 0``: no bound, as before it existed); the file with its WAL is sampled every
   second: its growth before the soft mark, its largest size against the bound, and how many callbacks were
   accepted and refused (503 ``size_bound``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

MIB = 1024 * 1024
TOKEN = "bench-disk-callback-token-0123456789"  # noqa: S105 (a throwaway gateway on loopback)
ADMIN = "bench-disk-admin-token-0123456789ab"
XML = {"Content-Type": "application/xml"}
_JOB = b"<JobsDetail><JobId>j%08d</JobId><State>Success</State><Tag>Transcode</Tag></JobsDetail>"


def body(first: int, jobs: int) -> bytes:
    """A callback of ``jobs`` minimal JobsDetail numbered from ``first``."""
    items = b"".join(_JOB % number for number in range(first, first + jobs))
    return b"<Response><EventName>TaskFinish</EventName>" + items + b"</Response>"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(db: Path, *args: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "relay", "serve", "--port", str(port), "--db", str(db)]
    tokens = ["--callback-token", TOKEN, "--admin-token", ADMIN, "--log-level", "error", *args]
    process = subprocess.Popen([*command, *tokens], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--duplicates", type=int, default=300)
    parser.add_argument("--bound-mib", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    options = parser.parse_args()
    print(f"relay from {os.environ.get('PYTHONPATH') or 'this tree'}")
    with tempfile.TemporaryDirectory() as folder:
        duplicates(Path(folder), options.jobs, options.duplicates)
        flood(Path(folder), options.jobs, int(options.bound_mib * MIB), options.seconds)


if __name__ == "__main__":
    main()
