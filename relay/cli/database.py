"""Opening the database for every command but `serve`: an existing one, never a new empty one.

A typo in ``--db`` must not answer "no jobs" from a fresh file, nor mint tokens COS does not know.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from relay.cli.options import KEY_FILE, BadSetting
from relay.store import Store, store_for
from relay.store.failures import StoreError
from relay.store.records import Target
from relay.store.sealing import Sealer


def sealer_of(key_file: Path | None) -> Sealer:
    """The sealer of ``--secret-key-file``; `BadSetting` when the file went bad since it was checked."""
    try:
        return Sealer.from_file(key_file)
    except ValueError as error:
        raise BadSetting(str(error)) from None


@contextlib.contextmanager
def existing_store(db_path: Target) -> Iterator[Store]:
    """The store at ``db_path`` (a file or a PostgreSQL URL), opened with the command's ``--secret-key-file``; a
    one-line error naming it when PostgreSQL cannot be reached (exit 1); no database there and a key that does
    not open its secrets end the command as `relay.cli.refusals` says."""
    store = store_for(
        db_path, create=False, pool_size=2, sealer=sealer_of(click.get_current_context().meta.get(KEY_FILE))
    )
    try:
        store.open()
    except StoreError as error:
        raise click.ClickException(f"cannot open the database at {db_path}: {error}") from None
    try:
        yield store
    finally:
        store.close()
