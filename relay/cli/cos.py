"""``cos-relay cos connect`` and ``cos-relay cos status``: point a source's COS queues at this gateway, and see
where each one's callback points; ``cos-relay cos release|discard``: an admin's decision on a callback whose jobs
COS did not confirm."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import click

from relay.api.params import MAX_ID
from relay.cli.database import existing_store
from relay.cli.options import Whole, cos_config_option, db_option, setting_option
from relay.cli.subscribers import subscribers_service
from relay.cli.tokens import configured_sources, in_force
from relay.cos.client import CosApi, CosUnavailable
from relay.cos.queues import connect_request, points_here, shown_url, source_queues
from relay.cos.sources import CosSource
from relay.deliver.ssrf import AddressPolicy
from relay.domain.clock import utc_now
from relay.outbox.config_file import read_cos_sources
from relay.store.records import Target


@click.group()
def cos() -> None:
    """COS as a peer: point a source's queues at this gateway, and see where they point."""


@cos.command()
@click.option("--source", "name", required=True, help="The [[cos]] source whose queues to connect.")
@cos_config_option
@setting_option("public_url")
@setting_option("callback_token")
@db_option
@click.pass_context
def connect(
    ctx: click.Context,
    name: str,
    config_path: Path,
    public_url: str | None,
    callback_token: str | None,
    db_path: Target,
) -> None:
    """Set the callback of each of the source's queues to this gateway (RELAY_PUBLIC_URL, the callback token in
    force; on, TaskFinish and WorkflowFinish, XML)."""
    source = _source(config_path, name)
    url, token = _callback(ctx, public_url, callback_token, db_path)
    failed = anyio.run(_connect, source, f"{url}?token={token}", (token,))
    if failed:
        raise click.exceptions.Exit(1)


@cos.command()
@cos_config_option
@setting_option("public_url")
@setting_option("callback_token")
@db_option
@click.pass_context
def status(
    ctx: click.Context, config_path: Path, public_url: str | None, callback_token: str | None, db_path: Target
) -> None:
    """Each source's queues: Active or Paused, where the callback points, and whether that is this gateway."""
    url, token = _callback(ctx, public_url, callback_token, db_path)
    failed = 0
    for source in read_cos_sources(config_path):
        failed += anyio.run(_status, source, url, (token,))
    if failed:
        raise click.exceptions.Exit(1)


@cos.command()
@click.argument("callback_id", metavar="CALLBACK_ID", type=Whole(1, MAX_ID))
@db_option
def release(db_path: Target, callback_id: int) -> None:
    """Send the events of the jobs COS did not confirm in callback CALLBACK_ID after all (POST
    /api/callbacks/ID/release)."""
    _decide(db_path, callback_id, "release")


@cos.command()
@click.argument("callback_id", metavar="CALLBACK_ID", type=Whole(1, MAX_ID))
@db_option
def discard(db_path: Target, callback_id: int) -> None:
    """Cancel the deliveries of the jobs COS did not confirm in callback CALLBACK_ID (POST
    /api/callbacks/ID/discard)."""
    _decide(db_path, callback_id, "discard")


def _decide(db_path: Target, callback_id: int, decision: str) -> None:
    with subscribers_service(db_path, AddressPolicy()) as service:
        decided = service.decide_unconfirmed(callback_id, decision)
    done = "queued" if decision == "release" else "cancelled"
    click.echo(f"callback {callback_id}: {decided['deliveries']} unconfirmed deliveries {done}")


def _source(config_path: Path, name: str) -> CosSource:
    sources = read_cos_sources(config_path)
    for source in sources:
        if source.name == name:
            return source
    known = ", ".join(source.name for source in sources) or "none"
    raise click.BadParameter(f"no source named {name} in {config_path} (known: {known})", param_hint="--source")


def _callback(
    ctx: click.Context, public_url: str | None, callback_token: str | None, db_path: Target
) -> tuple[str, str]:
    """The callback URL COS must post to (without its token) and the callback token in force."""
    if not public_url:
        raise click.UsageError("set RELAY_PUBLIC_URL (or --public-url): the URL COS posts to, this gateway's")
    with existing_store(db_path) as store:
        stored = store.tokens(utc_now())["callback_token"]
    token, where = in_force(stored, callback_token, configured_sources(ctx).get("callback_token"))
    if token is None:
        raise click.ClickException(f"the callback token is {where}")
    return f"{public_url.rstrip('/')}/cos/callback", token


def _api(source: CosSource) -> CosApi:
    return CosApi(source.endpoint, source.credentials, clock=time.time)


async def _connect(source: CosSource, url: str, tokens: tuple[str, ...]) -> int:
    api = _api(source)
    try:
        queues = await source_queues(api, source)
        for queue in queues:
            if points_here(queue, url.partition("?")[0], tokens):
                click.echo(f"{source.name}: {queue.family} queue {queue.queue_id} ({queue.name}) already points here")
                continue
            await api.update_queue(queue.family, queue.queue_id, connect_request(queue, url))
            click.echo(f"{source.name}: {queue.family} queue {queue.queue_id} ({queue.name}) now points here")
        if not queues:
            click.echo(f"{source.name}: COS lists no queue of this source", err=True)
            return 1
        return 0
    except CosUnavailable as error:
        click.echo(f"{source.name}: not connected: {error}", err=True)
        return 1
    finally:
        await api.aclose()


async def _status(source: CosSource, url: str, tokens: tuple[str, ...]) -> int:
    api = _api(source)
    try:
        for queue in await source_queues(api, source):
            where = shown_url(queue.callback_url) if queue.callback_on else "off"
            verdict = "this gateway" if points_here(queue, url, tokens) else "NOT this gateway"
            click.echo(
                f"{source.name}: {queue.family} queue {queue.queue_id} ({queue.name}): {queue.state},"
                f" callback {where}: {verdict}"
            )
        return 0
    except CosUnavailable as error:
        click.echo(f"{source.name}: no answer: {error}", err=True)
        return 1
    finally:
        await api.aclose()
