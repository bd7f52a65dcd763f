"""Only `serve` creates a database: every other command on a path with none says so and exits non-zero."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.store.records import PostgresUrl, Target
from tests.live import ProcessServer, db_text
from tests.mistakes.commands import cos_relay

COMMANDS = [
    ["jobs"],
    ["jobs", "show", "j1"],
    ["subscribers", "list"],
    ["subscribers", "show", "a"],
    ["subscribers", "add", "a", "--url", "https://example.com/hook"],
    ["subscribers", "update", "a", "--timeout", "3"],
    ["deliveries", "list"],
    ["deliveries", "show", "1"],
    ["tokens"],
    ["prune"],
    ["prune", "--dry-run"],
    ["backup", "never-written.db"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_other_than_serve_refuses_a_missing_database_and_creates_none(
    tmp_path: Path, command: list[str], sqlite_only: None
) -> None:
    # SQLite only: a missing file; PostgreSQL's never-set-up database is tests/store/test_postgres.py's.
    typo = tmp_path / "typo.db"
    result = CliRunner().invoke(main, [*command, "--db", str(typo)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: no database at {typo}: start `cos-relay serve --db {typo}` first, or pass --db (or RELAY_DB) "
        "naming the database the server uses"
    ]
    assert not typo.exists()


def test_tokens_on_a_missing_database_mints_nothing_and_exits_1_in_a_real_process(
    tmp_path: Path, sqlite_only: None
) -> None:
    # SQLite only: a missing file; PostgreSQL's never-set-up database is tests/store/test_postgres.py's.
    typo = tmp_path / "typo.db"
    result = cos_relay("tokens", "--db", str(typo))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: no database at {typo}: start `cos-relay serve")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not typo.exists()


@pytest.mark.slow
@pytest.mark.both_backends
def test_the_database_named_in_relay_db_is_the_one_looked_for(database: Target) -> None:
    missing = (
        PostgresUrl(database.url.rpartition("/")[0] + "/from_env")
        if isinstance(database, PostgresUrl)
        else database.with_name("from-env.db")
    )
    result = cos_relay("jobs", env={"RELAY_DB": db_text(missing)})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(missing) in result.stderr


@pytest.mark.slow
def test_serve_creates_the_database_and_says_so_once(tmp_path: Path, sqlite_only: None) -> None:
    # SQLite only: serve creates a file; a PostgreSQL database is created by its operator.
    db = tmp_path / "new.db"
    first = ProcessServer(db).start().stop()
    assert f"Created a new database at {db}" in first
    again = ProcessServer(db).start().stop()
    assert "Created a new database" not in again
    assert cos_relay("jobs", "--db", str(db)).stdout.strip() == "no jobs"


@pytest.mark.slow
def test_serve_never_creates_a_missing_folder_and_names_it_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "relay-dta" / "relay.db"  # a typo of an existing folder's name
    result = cos_relay("serve", "--db", str(db), "--port", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: the folder {db.parent} does not exist: create it first, or fix --db (RELAY_DB)"
    ]
    assert not db.parent.exists()


@pytest.mark.slow
def test_a_new_database_is_announced_on_stderr_once(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    first = ProcessServer(db).start()
    first.stop()
    assert "warning: there was no database at" in first.printed
    again = ProcessServer(db).start()
    assert "warning: there was no database" not in again.stop()
