"""``cos-relay serve``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from relay import logs
from relay.app import serving
from relay.cli.options import settings_options
from relay.cli.tokens import configured_sources
from relay.domain.errors import Rejected
from relay.http.auth import Credentials
from relay.settings.table import Settings
from relay.store.failures import StoreError


@click.command()
@settings_options
@click.pass_context
def serve(ctx: click.Context, /, **values: Any) -> None:
    """Run the gateway (uvicorn). Each option also reads its RELAY_* variable; an option given wins."""
    settings = Settings(**values)
    logs.configure(settings.log_level, settings.log_format)
    new = isinstance(settings.db_path, Path) and not settings.db_path.exists()
    try:
        credentials = serving.prepare(settings, configured_sources(ctx))
    except Rejected as error:
        # The config file's own refusals name it, with the line and key; others get its name here.
        where = str(settings.config_path)
        raise click.ClickException(
            error.detail if error.detail.startswith(where) else f"{where}: {error.detail}"
        ) from None
    except StoreError as error:
        # PostgreSQL unreachable or refusing (a file is created): the same one line as the other commands.
        raise click.ClickException(f"cannot open the database at {settings.db_path}: {error}") from None
    if new:
        # Loud, on stderr too: a new database where an existing one was meant answers COS 401 (new tokens).
        click.echo(f"Created a new database at {settings.db_path}")
        click.echo(
            f"warning: there was no database at {settings.db_path}: a new one with new tokens was made"
            " (if the gateway had a database before, stop it and fix --db)",
            err=True,
        )
    _print_banner(settings, credentials)
    serving.run(settings, credentials)


def _print_banner(settings: Settings, credentials: Credentials) -> None:
    url = f"{settings.base_url}/cos/callback"
    if credentials.callback_token is None:
        click.echo(f"Callback URL (NO TOKEN, insecure): {url}")
    elif credentials.generated and sys.stdout.isatty():
        click.echo("New tokens were generated and saved in the database.")
        click.echo(f"Callback URL for the COS console: {url}?token={credentials.callback_token}")
        click.echo(f"Admin API token (Authorization: Bearer ...): {credentials.admin_token}")
    elif credentials.generated:
        # Not a terminal: a journal, a log file or a pipe would keep the secrets. `tokens` prints them on demand.
        shown = f"cos-relay tokens --db {settings.db_path}"
        click.echo(f"New tokens were generated and saved in the database: `{shown}` prints them.")
        click.echo(f"Callback URL for the COS console: {url}?token=<run `{shown}`>")
    else:
        click.echo(f"Callback URL: {url}?token=<hidden: run `cos-relay tokens --db {settings.db_path}`>")
