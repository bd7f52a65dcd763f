"""A throwaway PostgreSQL 15 cluster in a temporary folder, from Debian's packages, for tests and benches.

`initdb` refuses root, so the cluster belongs to the ``postgres`` user (``runuser`` when we are root). It
listens on loopback and on a socket in its own folder, without fsync (nothing here must survive a power
cut), and is stopped (and its folder removed) by `stop`. The tests' shared cluster lives in memory
(`in_memory`) and copies its databases from a template over one kept connection (`copy_database`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from relay.store.records import PostgresUrl
from tests.live import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def in_memory() -> Path | None:
    """Where a cluster's folder goes to be in RAM (None: no tmpfs, the default temporary folder).

    A database copied by ``STRATEGY FILE_COPY`` costs a checkpoint: 0.44-0.68 s each on this disk, 0.02-0.04 s
    in memory (measured by 20 copies of the migrated template, under other processes' load).
    """
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


class Cluster:
    """One cluster: `start` it, `url` a database in it, `stop` it (and `start` it again, for outages).

    ``root`` is the folder its own folder is made in (default: the temporary folder; see `in_memory`).
    """

    def __init__(self, root: Path | None = None) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError("PostgreSQL 15 is not installed; run scripts/system-packages")
        self.folder = Path(tempfile.mkdtemp(prefix="cos-relay-pg-", dir=root))
        #: Kept for `copy_database` / `drop_database`: a connection each costs more than the copy.
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None
        self.data = self.folder / "data"
        self.port = free_port()
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
        if self._admin is not None:
            self._admin.close()
            self._admin = None
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

    def _admin_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(self.url(), autocommit=True)
        return self._admin

    def new_database(self) -> PostgresUrl:
        """A new, empty database of its own (cos-relay sets it up at its first connection): its URL."""
        name = f"d_{uuid.uuid4().hex}"
        self._admin_connection().execute(f"CREATE DATABASE {name}".encode())
        return PostgresUrl(self.url(name))

    def copy_database(self, name: str, template: str) -> None:
        """A new database ``name``, a copy of ``template`` file by file (no WAL: the cluster is throwaway)."""
        self._admin_connection().execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY".encode())

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending whatever connections a test left on it (so copies never pile up in memory)."""
        self._admin_connection().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())

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
