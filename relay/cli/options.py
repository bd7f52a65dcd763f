"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def db_option(command: F) -> F:
    return click.option(
        "--db",
        "db_path",
        envvar="RELAY_DB",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path("cos-relay.db"),
        show_default=True,
        help="SQLite database file (env RELAY_DB).",
    )(command)
