"""`cos-relay prune` and `cos-relay backup` on real databases: what they print, what they refuse, and the
space a prune gives back (a new file) or leaves for new rows to reuse (a file from before incremental vacuum).
Prune runs on both backends; backup copies SQLite files and refuses PostgreSQL in one line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils
from click.testing import CliRunner

from relay.cli import main
from relay.deliver.signing import generate_secret
from relay.domain.clock import utc_now
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.store import SqliteStore, store_for
from relay.store.records import Target
from relay.store.sqlite.migrations import migrations
from tests.conftest import fresh_database, ingest, job_body
from tests.live import db_text
from tests.postgres import Cluster


def pages(db: Path) -> int:
    """Pages the database holds (its size once the WAL is checkpointed), read as another process would."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


def filled(db: Target, count: int, first: int = 0) -> Target:
    ingest(db, *(job_body(n) for n in range(first, first + count)))
    return db


def legacy(db: Path) -> Path:
    """A database made before m005, as every earlier release made them: auto_vacuum NONE."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrations.apply(sqlite_utils.Database(conn), stop_before="m005_retention")
    conn.close()
    return db


def run(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output.strip().splitlines()


def test_prune_prints_per_kind_what_it_removed(database: Target) -> None:
    db = filled(database, 5)
    code, lines = run("prune", "--db", db_text(db), "--older-than", "0s", "--jobs-older-than", "forever")
    assert code == 0
    removed = dict(line.split() for line in lines[1:])
    assert lines[0].split() == ["kind", "removed"]
    assert (removed["callbacks"], removed["events"], removed["jobs"]) == ("5", "5", "0")
    with store_for(db, create=False) as store:
        assert store.counts()["callbacks"] == 0


def test_a_dry_run_prints_what_would_go_and_removes_nothing(database: Target) -> None:
    db = filled(database, 3)
    code, lines = run("prune", "--db", db_text(db), "--older-than", "0s", "--jobs-older-than", "0s", "--dry-run")
    assert code == 0
    would = dict(line.rsplit(maxsplit=1) for line in lines[1:])
    assert (would["callbacks"], would["jobs"], would["job_states"]) == ("3", "3", "3")
    with store_for(db, create=False) as store:
        assert store.counts()["callbacks"] == 3


def test_the_windows_default_to_the_retention_settings(database: Target) -> None:
    db = filled(database, 2)
    result = CliRunner().invoke(main, ["prune", "--db", db_text(db)], env={"RELAY_RETENTION": "0s"})
    assert result.exit_code == 0
    assert "callbacks            2" in result.output


def test_prune_refuses_a_duration_it_cannot_read_in_one_line(database: Target) -> None:
    db = filled(database, 1)
    code, lines = run("prune", "--db", db_text(db), "--older-than", "7 days")
    assert code == 2
    assert lines[-1] == (
        "Error: Invalid value for '--older-than' (env var: 'RELAY_RETENTION'): '7 days' is not a duration like"
        " 30d, 12h, 45m or 90s, from 0 up to 3650d, or forever"
    )


def test_backup_refuses_to_overwrite_a_file_in_one_line(tmp_path: Path) -> None:
    db = filled(tmp_path / "relay.db", 1)
    kept = tmp_path / "kept.db"
    kept.write_bytes(b"precious")
    assert run("backup", "--db", str(db), str(kept)) == (
        1,
        [f"Error: {kept} already exists: give a new file name (a backup never overwrites)"],
    )
    assert kept.read_bytes() == b"precious"
    missing = tmp_path / "no" / "such" / "dir.db"
    assert run("backup", "--db", str(db), str(missing)) == (
        1,
        [f"Error: {missing.parent} is not a directory: create it first"],
    )


def test_backup_of_a_postgresql_database_is_refused_in_one_line_naming_pg_dump(
    postgres: Cluster, tmp_path: Path
) -> None:
    db = filled(fresh_database(postgres), 1)
    target = tmp_path / "copy.db"
    assert run("backup", "--db", db_text(db), str(target)) == (
        1,
        ["Error: cos-relay backup copies SQLite files; for PostgreSQL use pg_dump (docs/operations.md)"],
    )
    assert not target.exists()


def test_a_backup_is_a_working_database_with_every_job_and_owed_delivery(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    with SqliteStore(db) as store:
        spec = SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter())
        store.add_subscriber(spec, utc_now())
    filled(db, 4)
    copy = tmp_path / "copy.db"
    code, lines = run("backup", "--db", str(db), str(copy))
    assert code == 0
    assert lines[0].startswith(f"backed up {db} to {copy} (")
    with SqliteStore(copy, create=False) as store:
        assert store.counts()["jobs"] == 4
        assert store.count_deliveries("pending") == 4


def test_a_new_database_gives_the_pages_a_prune_frees_back_to_the_filesystem(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    filled(db, 200)
    before = pages(db)
    assert run("prune", "--db", str(db), "--older-than", "0s", "--jobs-older-than", "0s")[0] == 0
    assert pages(db) < before / 4


def test_a_database_from_before_incremental_vacuum_reuses_freed_pages_and_its_backup_can_shrink(
    tmp_path: Path,
) -> None:
    db = legacy(tmp_path / "relay.db")
    filled(db, 200)
    assert run("prune", "--db", str(db), "--older-than", "0s", "--jobs-older-than", "0s")[0] == 0
    full = pages(db)
    filled(db, 200, first=1000)  # as many new callbacks again: they fill the freed pages
    assert pages(db) <= full * 1.05
    copy = tmp_path / "compact.db"
    assert run("backup", "--db", str(db), str(copy))[0] == 0
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on, once restored
