"""A throwaway PostgreSQL 15 cluster in a temporary folder, from Debian's packages, for tests and benches.

`initdb` refuses root, so the cluster belongs to the ``postgres`` user (``runuser`` when we are root). It
listens on loopback and on a socket in its own folder, without fsync (nothing here must survive a power
cut), and is stopped (and its folder removed) by `stop`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


class Cluster:
    """One cluster: `start` it, `url` a database in it, `stop` it (and `start` it again, for outages)."""

    def __init__(self) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError("PostgreSQL 15 is not installed; run scripts/system-packages")
        self.folder = Path(tempfile.mkdtemp(prefix="cos-relay-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        subprocess.run(
            _as_postgres(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"),
            check=True,
            capture_output=True,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-k {self.folder} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        subprocess.run(
            _as_postgres(
                str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "-w", "start"
            ),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"),
            check=False,
            capture_output=True,
        )

    def psql(self, sql: str, database: str = "postgres", options: str = "") -> str:
        """Run ``sql``; ``options`` are the session's settings (``-c name=value``)."""
        return subprocess.run(
            [str(BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", self.url(database), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PGOPTIONS": options},
        ).stdout

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running() -> Iterator[Cluster]:
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()
