"""Opening the database for every command but `serve`: an existing one, never a new empty one.

A typo in ``--db`` must not answer "no jobs" from a fresh file, nor mint tokens COS does not know.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from relay.errors import NoDatabase
from relay.store import Store


@contextlib.contextmanager
def existing_store(db_path: Path) -> Iterator[Store]:
    """The store at ``db_path``, opened; a one-line error (exit 1) naming the path when there is none."""
    store = Store(db_path, create=False)
    try:
        store.open()
    except NoDatabase as error:
        raise click.ClickException(error.detail) from None
    try:
        yield store
    finally:
        store.close()
