"""``cos-relay secrets``: the keys the secrets kept in the database are encrypted under (docs/operations.md)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from relay.cli.database import existing_store
from relay.cli.options import KEY_FILE, BadSetting, db_option
from relay.store.records import Target
from relay.store.sealing import generate_key, key_id, read_keys

#: A key file is the owner's alone, whatever the umask.
PRIVATE = 0o600


@click.group()
def secrets() -> None:
    """Keys for the secrets kept in the database: RELAY_SECRET_KEY_FILE holds them, the first one seals."""


@secrets.command("new-key")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def new_key(file: Path) -> None:
    """Put a new key first in FILE (created owner-only if missing; the keys already there stay after it, so
    what they sealed still opens). Then `cos-relay secrets rotate-key` (or a restart) seals everything anew."""
    key = generate_key()
    try:
        kept = file.read_text(encoding="utf-8") if file.exists() else ""
        if kept:
            read_keys(file)  # never write a key in front of a file that is not a key file
        draft = file.with_name(f".{file.name}.new")
        descriptor = os.open(draft, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(f"{key}\n{kept}")
            out.flush()
            os.fsync(out.fileno())
        draft.replace(file)
    except (OSError, ValueError) as error:
        raise click.ClickException(f"cannot write a key to {file}: {error}") from None
    click.echo(f"Key {key_id(read_keys(file)[0])} is now first in {file}.")


@secrets.command("rotate-key")
@db_option
def rotate_key(db_path: Target) -> None:
    """Seal every secret in the database under the first key of --secret-key-file (any start does it too);
    afterwards the file's other keys can be removed."""
    key_file: Path | None = click.get_current_context().meta.get(KEY_FILE)
    if key_file is None:
        raise BadSetting("give the key file with --secret-key-file or RELAY_SECRET_KEY_FILE")
    with existing_store(db_path):  # opening seals anew whatever is not under the first key
        pass
    click.echo(f"Every secret in {db_path} is sealed under key {key_id(read_keys(key_file)[0])}.")
