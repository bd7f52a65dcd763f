"""How a command ends when the domain or the store refuses: the refusal's own line (``Error: ...``) and the exit
code of this one table. Commands let these rise; the ``cos-relay`` group maps them here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from relay.domain.errors import Rejected
from relay.store.failures import BackupRefused, NoDatabase, NoFolder
from relay.store.sealing import WrongSecretKey

#: A refusal's exit code is that of its class, or of the nearest class above it here.
EXIT_CODES: Mapping[type[Exception], int] = {
    # The domain refused: a subscriber definition not valid, a name unknown or taken, a value not valid.
    Rejected: 1,
    # --db names no database: start `serve` first, or name the one it uses.
    NoDatabase: 1,
    # The backup's FILE exists, its folder does not, or the database is PostgreSQL's.
    BackupRefused: 1,
    # A key that does not open the database's secrets: a bad setting, exit 2 as every other.
    WrongSecretKey: 2,
    # --db in a folder that does not exist (a typo): a bad setting too; no folder is ever created.
    NoFolder: 2,
}


def exit_code_of(error: Exception) -> int:
    """The exit code of ``error``'s class, or of the nearest class above it in `EXIT_CODES`."""
    return next(EXIT_CODES[kind] for kind in type(error).__mro__ if kind in EXIT_CODES)


class Commands(click.Group):
    """A command group whose commands' refusals end them as `EXIT_CODES` says, never with a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except tuple(EXIT_CODES) as error:
            # The line click gives its own errors: ``Error: ...`` on stderr.
            click.echo(f"Error: {error}", err=True)
            ctx.exit(exit_code_of(error))
