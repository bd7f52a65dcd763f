"""PostgreSQL's own words, not a driver's class name (issue 25, item 8): a database that does not exist, a role
that does not, and a server that is not there each end a command in one line that says what is wrong and the fix."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from relay.cli import main
from tests.live import free_port
from tests.postgres import Cluster


def one_line(db: str) -> str:
    result = CliRunner().invoke(main, ["jobs", "--db", db])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert "Error" in line
    assert "Traceback" not in result.output
    return line


@pytest.mark.parametrize(
    ("where", "said"),
    [
        (
            "/no_such_database",
            'PostgreSQL says: database "no_such_database" does not exist: create it (docs/deploy.md)',
        ),
        ("nobody@/postgres", 'PostgreSQL refused the login: role "nobody" does not exist: create the role'),
    ],
)
def test_a_missing_database_or_role_is_named_with_the_fix(postgres: Cluster, where: str, said: str) -> None:
    user, _, database = where.rpartition("@")
    url = postgres.url(database.lstrip("/")).replace("postgres@", f"{user or 'postgres'}@")
    line = one_line(url)
    assert said in line
    assert "Error" not in line.partition(":")[2]  # no exception class name after the first word


def test_a_server_that_is_not_there_is_said_so() -> None:
    line = one_line(f"postgresql://postgres@127.0.0.1:{free_port()}/relay")
    assert "cannot connect to PostgreSQL:" in line
    assert "is it running there?" in line
