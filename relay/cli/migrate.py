"""``cos-relay migrate-to URL``: move an SQLite database to PostgreSQL (stop the gateway first)."""

from __future__ import annotations

from pathlib import Path

import click

from relay.cli.database import existing_store
from relay.cli.options import db_option
from relay.store import store_for
from relay.store.failures import StoreError
from relay.store.postgres.copy import copy_from_sqlite
from relay.store.records import PostgresUrl, Target, target_of


@click.command("migrate-to")
@click.argument("url")
@db_option
def migrate_to(url: str, db_path: Target) -> None:
    """Copy the SQLite database (--db) into the PostgreSQL database at URL, which must hold no callbacks or
    subscribers yet. Stop the gateway first; then serve with --db URL."""
    if not isinstance(db_path, Path):
        raise click.ClickException("--db must name the SQLite file to copy from")
    target = target_of(url)
    if not isinstance(target, PostgresUrl):
        raise click.ClickException(f"{url!r} is not a PostgreSQL URL (postgresql://USER@HOST/DATABASE)")
    with existing_store(db_path):  # refuses a missing file, brings an old one to the current schema
        pass
    try:
        with store_for(target):  # sets the target up (migrated) if it is new
            pass
        copied = copy_from_sqlite(db_path, target)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot reach the database at {target}: {error}") from None
    total = sum(copied.values())
    click.echo(f"Copied {total} rows from {db_path} to {target}:")
    for table, count in copied.items():
        click.echo(f"  {table:<20} {count}")
    click.echo(f"Now start the gateway with --db {target} (or RELAY_DB).")
