"""What the benchmarks ran on: CPU, Python, library versions, SQLite settings, load, git revision."""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from relay.store.sqlite import connection

LIBRARIES = ("starlette", "uvicorn", "uvloop", "httptools", "lxml", "xmlschema", "aiohttp", "orjson", "sqlite-utils")
_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total_mib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def sqlite_settings() -> dict[str, Any]:
    """The settings the gateway's own connections get (relay.store.sqlite.connection.connect, default durability)."""
    with tempfile.TemporaryDirectory() as folder:
        conn = connection.connect(Path(folder) / "probe.db")
        try:
            return {
                "version": sqlite3.sqlite_version,
                "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": _SYNCHRONOUS.get(conn.execute("PRAGMA synchronous").fetchone()[0], "?"),
                "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
                "cache_size": conn.execute("PRAGMA cache_size").fetchone()[0],
                "foreign_keys": bool(conn.execute("PRAGMA foreign_keys").fetchone()[0]),
            }
        finally:
            conn.close()


def _command(*args: str) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=ROOT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip() or None


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    first = (_command("wrk", "-v") or "").splitlines()
    return first[0].split(" Copyright")[0] if first else None


def describe() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    dirty = _command("git", "status", "--porcelain", "--", "relay")
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_mib": memory_total_mib(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "libraries": versions,
        "sqlite": sqlite_settings(),
        "wrk": wrk_version(),
        "load_average_at_start": os.getloadavg(),
        "git": _command("git", "rev-parse", "--short", "HEAD"),
        "relay_modified": bool(dirty),
    }
