"""Opening the database for every command but `serve`: an existing one, never a new empty one.

A typo in ``--db`` must not answer "no jobs" from a fresh file, nor mint tokens COS does not know.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from relay.errors import NoDatabase
from relay.store import Store, store_for
from relay.store.failures import StoreError
from relay.store.records import Target


@contextlib.contextmanager
def existing_store(db_path: Target) -> Iterator[Store]:
    """The store at ``db_path`` (a file or a PostgreSQL URL), opened; a one-line error (exit 1) naming it when
    there is none, or when PostgreSQL cannot be reached."""
    store = store_for(db_path, create=False, pool_size=2)
    try:
        store.open()
    except NoDatabase as error:
        raise click.ClickException(error.detail) from None
    except StoreError as error:
        raise click.ClickException(f"cannot open the database at {db_path}: {error}") from None
    try:
        yield store
    finally:
        store.close()
