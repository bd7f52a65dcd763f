"""``cos-relay tokens`` (the tokens in force, where each comes from; ``rotate``) and ``cos-relay sessions end-all``.

Only the token in force is ever printed or stored: the database records where the gateway found each token at
its last start (and a fingerprint), so a token configured where the gateway runs is never mistaken for one
kept in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from relay.cli.database import existing_store
from relay.cli.options import db_option, setting_option
from relay.domain.clock import utc_now
from relay.http.auth import DATABASE, INSECURE, fingerprint, rotate, rotation_refused
from relay.settings.table import Settings, setting_named
from relay.store.records import TOKENS, StoredToken, Target

F = TypeVar("F", bound=Callable[..., Any])


def configured_sources(ctx: click.Context) -> dict[str, str]:
    """Where each token given to this command came from: its option or its ``RELAY_*`` variable."""
    found = {}
    for field in TOKENS:
        setting = setting_named(field)
        source = ctx.get_parameter_source(field)
        if source is ParameterSource.COMMANDLINE:
            found[field] = setting.option
        elif source is ParameterSource.ENVIRONMENT:
            found[field] = setting.env
    return found


def in_force(stored: StoredToken, here: str | None, here_from: str | None) -> tuple[str | None, str]:
    """The token in force (None: not known here) and a phrase saying where it comes from or why it is not shown.

    ``here`` is the token configured for this command (from ``here_from``); ``stored`` what the database knows,
    the source recorded at the gateway's last start included.
    """
    if stored.source == INSECURE:
        return None, f"none: the gateway accepts callbacks without a token ({INSECURE})"
    if stored.source == DATABASE or (stored.source is None and here is None):
        if stored.value is None:
            return None, "none yet: `cos-relay serve` generates one at its first start"
        ignored = f"; {here_from} set here is not in force" if here is not None and here != stored.value else ""
        return stored.value, f"from the database{ignored}"
    if here is not None and (stored.fingerprint is None or stored.fingerprint == fingerprint(here)):
        return here, f"from {here_from}"
    if here is not None:
        return None, f"not shown: the gateway started with another one, from its {stored.source}"
    return None, f"not shown: the gateway takes it from its {stored.source}, which is not set here"


def _token_options(command: F) -> F:
    for decorate in reversed(
        (
            db_option,
            setting_option("public_url"),
            setting_option("host"),
            setting_option("port"),
            setting_option("callback_token"),
            setting_option("admin_token"),
        )
    ):
        command = decorate(command)
    return command


@click.command()
@click.argument("action", required=False, type=click.Choice(["rotate"]))
@click.option("--callback", "which", flag_value="callback_token", help="rotate: a new callback token.")
@click.option("--admin", "which", flag_value="admin_token", help="rotate: a new admin token; every session ends.")
@setting_option("callback_token_grace", option="--grace", dest="grace")
@_token_options
@click.pass_context
def tokens(
    ctx: click.Context,
    action: str | None,
    which: str | None,
    grace: float,
    db_path: Target,
    public_url: str | None,
    host: str,
    port: int,
    callback_token: str | None,
    admin_token: str | None,
) -> None:
    """Print the tokens in force and where each comes from; nothing is generated or stored.

    `tokens rotate --callback` keeps a new callback token in the database; the previous one is still accepted
    for --grace (0: refused at once). `tokens rotate --admin` keeps a new admin token: the previous one and
    every console session end at once. Running gateways take either up within a second, without a restart.
    Only a token kept in the database rotates: one set by an option or a RELAY_* variable is changed there.
    """
    settings = Settings(db_path=db_path, public_url=public_url, host=host, port=port)
    here = {"callback_token": callback_token, "admin_token": admin_token}
    sources = configured_sources(ctx)
    if action is None and which is not None:
        raise click.UsageError("--callback and --admin go with `rotate`: cos-relay tokens rotate --callback")
    if action == "rotate" and which is None:
        raise click.UsageError("say which token to rotate: cos-relay tokens rotate --callback (or --admin)")
    ended = 0
    with existing_store(db_path) as store:
        now = utc_now()
        stored = store.tokens(now)
        if which is not None:
            refused = rotation_refused(which, stored[which], sources.get(which))
            if refused is not None:
                raise click.ClickException(refused)
            _, ended = rotate(store, which, timedelta(seconds=grace), now)
            stored = store.tokens(now)
    for name in TOKENS:
        value, where = in_force(stored[name], here[name], sources.get(name))
        if value is None:
            click.echo(f"{name}: {where}")
            continue
        click.echo(f"{name}: {value}")
        click.echo(f"  {where}")
        if name == "callback_token":
            previous = stored[name].previous_until
            if previous is not None and stored[name].source == DATABASE:
                click.echo(f"  the previous callback token is still accepted until {previous:%Y-%m-%d %H:%M:%S} UTC")
            click.echo(f"callback URL: {settings.base_url}/cos/callback?token={value}")
            if settings.public_url is None:
                # Behind a proxy or on a replica, the local address is not the one COS reaches.
                click.echo("  (this host's own address: set RELAY_PUBLIC_URL or --public-url to the one COS reaches)")
    if which == "callback_token":
        if grace:
            click.echo("Paste the new callback URL into the COS console before the previous token ends.")
        else:
            click.echo("The previous callback token is refused from now on (--grace 0).")
    elif which == "admin_token":
        click.echo(f"The previous admin token is refused from now on; {ended} console session(s) ended.")


@click.group()
def sessions() -> None:
    """Web console sessions (each also ends by signing out, and when the admin token changes)."""


@sessions.command("end-all")
@db_option
def end_all(db_path: Target) -> None:
    """End every console session at once, on every replica: each browser must sign in again."""
    with existing_store(db_path) as store:
        ended = store.end_sessions(utc_now())
    click.echo(f"{ended} console session(s) ended")
