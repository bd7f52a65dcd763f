"""``cos-relay serve`` and ``cos-relay tokens``."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import click
import uvicorn

from relay import logs
from relay.app import create_app, utc_now
from relay.auth import resolve_credentials
from relay.cli.options import Whole, db_option
from relay.deliver.retry import DEFAULT_SCHEDULE, parse_schedule
from relay.deliver.ssrf import AddressPolicy
from relay.errors import Rejected
from relay.outbox.manage import Subscribers
from relay.receive.protocol import HeadTimeoutProtocol
from relay.settings import MAX_BODIES, MIB, PORTS, WORKERS, Settings
from relay.store import Store

logger = logging.getLogger(__name__)


def _networks(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        AddressPolicy.from_setting(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _schedule(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return parse_schedule(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--host", envvar="RELAY_HOST", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", envvar="RELAY_PORT", type=Whole(*PORTS), default=8080, show_default=True, help="Bind port.")
@db_option
@click.option("--callback-token", envvar="RELAY_CALLBACK_TOKEN", help="Token COS must send as ?token=.")
@click.option("--admin-token", envvar="RELAY_ADMIN_TOKEN", help="Bearer token for the JSON API.")
@click.option(
    "--insecure-no-token",
    is_flag=True,
    envvar="RELAY_INSECURE_NO_TOKEN",
    help="Accept callbacks without a token (never in production).",
)
@click.option(
    "--max-body",
    envvar="RELAY_MAX_BODY",
    type=Whole(*MAX_BODIES),
    default=10 * MIB,
    show_default=True,
    help="Largest body, in bytes.",
)
@click.option(
    "--durability",
    envvar="RELAY_DURABILITY",
    type=click.Choice(["normal", "full"]),
    default="normal",
    show_default=True,
    help="normal: survive a process crash; full: also survive power loss (fsync per commit).",
)
@click.option(
    "--workers",
    envvar="RELAY_WORKERS",
    type=Whole(*WORKERS),
    default=1,
    show_default=True,
    help="uvicorn worker processes.",
)
@click.option("--public-url", envvar="RELAY_PUBLIC_URL", help="Base URL COS reaches us at, for the printed hint.")
@click.option(
    "--config",
    "config_path",
    envvar="RELAY_CONFIG",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file of [[subscribers]], applied at every start (env RELAY_CONFIG).",
)
@click.option(
    "--allow-networks",
    envvar="RELAY_ALLOW_NETWORKS",
    default="",
    callback=_networks,
    help="Non-public networks subscribers may be reached at, e.g. 127.0.0.0/8,10.1.0.0/16 (env RELAY_ALLOW_NETWORKS).",
)
@click.option(
    "--retry-schedule",
    envvar="RELAY_RETRY_SCHEDULE",
    callback=_schedule,
    metavar="5,300,1800",
    help="Seconds to wait after each failed delivery attempt; after the last the delivery is dead "
    "(env RELAY_RETRY_SCHEDULE).",
)
@click.option("--log-level", envvar="RELAY_LOG_LEVEL", default="info", show_default=True, help="Python log level.")
@click.option(
    "--log-format",
    envvar="RELAY_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line with job_id, event_id, subscriber, outcome.",
)
def serve(
    host: str,
    port: int,
    db_path: Path,
    callback_token: str | None,
    admin_token: str | None,
    insecure_no_token: bool,
    max_body: int,
    durability: str,
    workers: int,
    public_url: str | None,
    config_path: Path | None,
    allow_networks: str,
    retry_schedule: tuple[float, ...] | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run the gateway (uvicorn) on the embedded defaults unless told otherwise."""
    logs.configure(log_level, log_format)  # type: ignore[arg-type]
    # Settings without an option of their own (RELAY_GATEWAY_ID, RELAY_POLL_INTERVAL, ...) come from the
    # environment, as they do in worker processes; the options override the rest.
    try:
        from_env = Settings.from_env(os.environ)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = from_env.replace(
        host=host,
        port=port,
        db_path=db_path,
        callback_token=callback_token,
        admin_token=admin_token,
        insecure_no_token=insecure_no_token,
        max_body=max_body,
        durability=durability,
        workers=workers,
        public_url=public_url,
        config_path=config_path,
        allow_networks=allow_networks,
        retry_schedule=DEFAULT_SCHEDULE if retry_schedule is None else retry_schedule,
    )
    with Store(settings.db_path) as store:
        credentials = resolve_credentials(settings, store, utc_now)
    settings = settings.replace(callback_token=credentials.callback_token, admin_token=credentials.admin_token)
    # Applied here, before uvicorn: a bad file is one line and exit 1, not a traceback from the app's
    # startup; and once, as worker processes applying it all at once would race to create the same names.
    _apply_config(settings)
    _print_banner(settings, show_tokens=credentials.generated)
    # Access logs would print the callback URL, token included: cos-relay logs each callback itself.
    # log_config=None: uvicorn keeps the logging set up above (and its format) instead of its own.
    options = {
        "host": host,
        "port": port,
        "access_log": False,
        "server_header": False,
        "log_config": None,
        # A request head that trickles in (or never comes) is cut off like a trickling body.
        "http": functools.partial(HeadTimeoutProtocol, head_timeout=settings.body_timeout),
    }
    if workers == 1:
        uvicorn.run(create_app(settings.replace(config_path=None)), **options)  # type: ignore[arg-type]
        return
    # Worker processes rebuild the app from the environment, so hand them the resolved settings there.
    os.environ.update(
        {
            "RELAY_HOST": host,
            "RELAY_PORT": str(port),
            "RELAY_DB": str(settings.db_path),
            "RELAY_ADMIN_TOKEN": settings.admin_token or "",
            "RELAY_CALLBACK_TOKEN": settings.callback_token or "",
            "RELAY_INSECURE_NO_TOKEN": "1" if insecure_no_token else "",
            "RELAY_MAX_BODY": str(max_body),
            "RELAY_DURABILITY": durability,
            "RELAY_ALLOW_NETWORKS": settings.allow_networks,
            "RELAY_RETRY_SCHEDULE": ",".join(str(delay) for delay in settings.retry_schedule),
            "RELAY_CONFIG": "",
            "RELAY_LOG_LEVEL": log_level,
            "RELAY_LOG_FORMAT": log_format,
            # Each worker counts into files here and /metrics, whichever worker answers, adds them all up.
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="cos-relay-metrics-"),
        }
    )
    uvicorn.run("relay.app:create_app_from_env", factory=True, workers=workers, **options)  # type: ignore[arg-type]


def _apply_config(settings: Settings) -> None:
    if settings.config_path is None:
        return
    with Store(settings.db_path) as store:
        subscribers = Subscribers(
            store,
            AddressPolicy.from_setting(settings.allow_networks),
            utc_now,
            secret_grace=timedelta(seconds=settings.secret_grace),
        )
        try:
            changes = subscribers.apply_config(settings.config_path)
        except Rejected as error:
            raise click.ClickException(f"{settings.config_path}: {error.detail}") from None
    for change in changes:
        logger.info("config: %s", change, extra={"action": "config_applied"})


def _print_banner(settings: Settings, *, show_tokens: bool) -> None:
    url = f"{settings.base_url}/cos/callback"
    if settings.callback_token is None:
        click.echo(f"Callback URL (NO TOKEN, insecure): {url}")
    elif show_tokens:
        click.echo("New tokens were generated and saved in the database.")
        click.echo(f"Callback URL for the COS console: {url}?token={settings.callback_token}")
        click.echo(f"Admin API token (Authorization: Bearer ...): {settings.admin_token}")
    else:
        click.echo(f"Callback URL: {url}?token=<hidden: run `cos-relay tokens --db {settings.db_path}`>")


@click.command()
@db_option
def tokens(db_path: Path) -> None:
    """Print the callback URL and admin token kept in the database (generating them if missing)."""
    settings = Settings(db_path=db_path)
    with Store(db_path) as store:
        credentials = resolve_credentials(settings, store, utc_now)
    click.echo(f"callback_token: {credentials.callback_token}")
    click.echo(f"admin_token: {credentials.admin_token}")
    click.echo(f"callback URL: {settings.base_url}/cos/callback?token={credentials.callback_token}")
