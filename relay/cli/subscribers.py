"""``cos-relay subscribers``: add, change, pause, rotate and replay subscribers straight in the database."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from relay.api.params import parse_since
from relay.cli import units
from relay.cli.database import existing_store
from relay.cli.options import Decimal, Whole, db_option, setting_option
from relay.cli.table import render_table
from relay.deliver.ssrf import AddressPolicy
from relay.domain.clock import utc_now
from relay.domain.destinations import ContentMode, Kind, Rate, parse_rate
from relay.domain.errors import BadParameter
from relay.domain.retry import parse_schedule
from relay.domain.subscribers import DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT, MAX_IN_FLIGHT, TIMEOUTS
from relay.outbox.service import Subscribers
from relay.store.records import Target

F = TypeVar("F", bound=Callable[..., object])

SHOWN_ONCE = "keep this secret now; it is shown only once"


def _policy(ctx: click.Context, param: click.Parameter, value: str) -> AddressPolicy:
    return AddressPolicy.from_setting(value)  # already checked by the setting's parser


def _schedule(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return parse_schedule(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> Rate | None:
    if value is None:
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _since(ctx: click.Context, param: click.Parameter, value: str) -> datetime:
    try:
        return parse_since(value, utc_now())
    except BadParameter as exc:
        raise click.BadParameter(exc.detail) from None


def store_options(command: F) -> F:
    """``--db`` and ``--allow-networks``: what every command that changes subscribers needs."""
    command = setting_option("allow_networks", dest="policy", callback=_policy)(command)
    return db_option(command)


@contextlib.contextmanager
def subscribers_service(db_path: Target, policy: AddressPolicy, **options: Any) -> Iterator[Subscribers]:
    """The `Subscribers` service over the database at ``db_path``; its refusals end the command
    (`relay.cli.refusals`)."""
    with existing_store(db_path) as store:
        yield Subscribers(store, policy, utc_now, **options)


def _filters(match: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in match.items()) or "-"


def _echo_fields(fields: Mapping[str, Any]) -> None:
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        if isinstance(value, bool):
            value = "yes" if value else "no"  # not Python's True and False
        elif isinstance(value, list):
            value = ",".join(str(item) for item in value)
        elif isinstance(value, dict):  # filters, or the handshake's verdict (whose unknowns are left out)
            value = _filters({key: part for key, part in value.items() if part is not None})
        elif name.endswith("_at") and isinstance(value, str):
            value = units.instant(value)
        click.echo(f"{name.ljust(width)}  {'-' if value is None or value == '' else value}")


@click.group()
def subscribers() -> None:
    """Manage the subscribers events are relayed to (works while the server runs)."""


@subscribers.command()
@click.argument("name")
@click.option("--url", required=True, help="Where events are POSTed (http or https).")
@click.option("--secret", help="Signing secret (whsec_<base64>); generated when omitted.")
@click.option("--type", "types", multiple=True, help="Event type to deliver, * wildcards (repeatable; default *).")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only events whose tag, state, queue_id, bucket or object_prefix matches (repeatable).",
)
@click.option(
    "--max-in-flight",
    type=Whole(*MAX_IN_FLIGHT),
    default=DEFAULT_MAX_IN_FLIGHT,
    show_default=True,
    help="Deliveries in flight at once (1 keeps strict order).",
)
@click.option(
    "--timeout",
    type=Decimal(*TIMEOUTS),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds per attempt.",
)
@click.option(
    "--retry-schedule",
    callback=_schedule,
    metavar="5,30,300",
    help="Seconds to wait after each failed attempt; default: the gateway's schedule.",
)
@click.option(
    "--store-response/--no-store-response",
    default=False,
    show_default=True,
    help="Keep the first 4 KiB of each answer with its attempt (shown to admins).",
)
@click.option(
    "--kind",
    type=click.Choice([kind.value for kind in Kind]),
    default=Kind.WEBHOOK.value,
    show_default=True,
    help="webhook: signed CloudEvents POSTed to URL; wecom, feishu, dingtalk, slack: a chat robot's URL;"
    " rabbitmq, nats, redis: a broker's amqp://, nats://, redis:// URL.",
)
@click.option("--rate", callback=_rate, metavar="10/s", help="Deliveries started per second or minute (600/m).")
@click.option(
    "--handshake/--no-handshake",
    default=False,
    show_default=True,
    help="Validate the endpoint with the CloudEvents handshake first (webhooks).",
)
@click.option(
    "--content-mode",
    type=click.Choice([mode.value for mode in ContentMode]),
    default=ContentMode.STRUCTURED.value,
    show_default=True,
    help="binary: the event's data as the body and ce-* headers (webhooks and brokers).",
)
@click.option("--template", help="A robot's message template (default: a message per event type).")
@store_options
def add(
    db_path: Target,
    policy: AddressPolicy,
    name: str,
    url: str,
    secret: str | None,
    types: tuple[str, ...],
    filters: tuple[str, ...],
    max_in_flight: int,
    timeout: float,
    retry_schedule: tuple[float, ...] | None,
    store_response: bool,
    kind: str,
    rate: Rate | None,
    handshake: bool,
    content_mode: str,
    template: str | None,
) -> None:
    """Add subscriber NAME and print its signing secret (once)."""
    with subscribers_service(db_path, policy) as service:
        created = service.add(
            name,
            url,
            secret=secret,
            types=types,
            filters=filters,
            max_in_flight=max_in_flight,
            timeout=timeout,
            retry_schedule=retry_schedule,
            store_response=store_response,
            kind=Kind(kind),
            rate=rate,
            handshake=handshake,
            content_mode=ContentMode(content_mode),
            template=template,
            source="cli",
        )
    _echo_fields(created.public(reveal_secret=True))
    click.echo(f"\n{SHOWN_ONCE}")


@subscribers.command(name="list")
@store_options
def list_(db_path: Target, policy: AddressPolicy) -> None:
    """List subscribers (secrets masked)."""
    with subscribers_service(db_path, policy) as service:
        found = [subscriber.public() for subscriber in service.all()]
    if not found:
        click.echo("no subscribers")
        return
    rows = [
        (s["name"], s["kind"], s["state"], s["url"], ",".join(s["types"]), _filters(s["filters"]), s["secret"])
        for s in found
    ]
    click.echo(render_table(rows, ("name", "kind", "state", "url", "types", "filters", "secret")))


@subscribers.command()
@click.argument("name")
@store_options
def show(db_path: Target, policy: AddressPolicy, name: str) -> None:
    """Show every field of subscriber NAME (secret masked)."""
    with subscribers_service(db_path, policy) as service:
        _echo_fields(service.describe(name))


class Mistake(click.ClickException):
    """A command line that asks for nothing, or for two opposite things: one line, exit status 2 (no usage text)."""

    exit_code = 2


#: The options of `store_options`: where to work, not what to change.
_NOT_CHANGES = frozenset({"db_path", "secret_key_file", "policy"})


def _changes_of(command: click.Command) -> str:
    """The options of ``command`` that change something, as its help spells them."""
    return ", ".join(
        "/".join((*param.opts, *param.secondary_opts))
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and param.name not in _NOT_CHANGES
    )


@subscribers.command()
@click.argument("name")
@click.option("--url", help="Where events are sent from now on (refused as add refuses it).")
@click.option(
    "--type", "types", multiple=True, help="Event type to deliver, * wildcards (repeatable; replaces the types)."
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only events whose tag, state, queue_id, bucket or object_prefix matches (repeatable; replaces the filters).",
)
@click.option("--no-filters", is_flag=True, help="Drop every filter: each event of the types is delivered.")
@click.option(
    "--max-in-flight", type=Whole(*MAX_IN_FLIGHT), help="Deliveries in flight at once (1 keeps strict order)."
)
@click.option("--timeout", type=Decimal(*TIMEOUTS), help="Seconds per attempt.")
@click.option(
    "--retry-schedule",
    callback=_schedule,
    metavar="5,30,300",
    help="Seconds to wait after each failed attempt.",
)
@click.option("--default-retry-schedule", is_flag=True, help="Use the gateway's retry schedule again.")
@click.option(
    "--store-response/--no-store-response",
    default=None,
    help="Keep the first 4 KiB of each answer with its attempt (shown to admins), or stop keeping them.",
)
@click.option(
    "--kind",
    type=click.Choice([kind.value for kind in Kind]),
    help="Another kind (as add's --kind): give --url too unless the URL suits that kind. A new kind gets the"
    " secret add gives it (webhooks and brokers a new one, robots none) and the old secret stops signing at once:"
    " `cos-relay subscribers secret NAME` prints it.",
)
@click.option("--rate", callback=_rate, metavar="10/s", help="Deliveries started per second or minute (600/m).")
@click.option("--no-rate", is_flag=True, help="No rate: only --max-in-flight limits deliveries.")
@click.option(
    "--handshake/--no-handshake",
    default=None,
    help="Validate the endpoint with the CloudEvents handshake first (webhooks), or stop asking.",
)
@click.option(
    "--content-mode",
    type=click.Choice([mode.value for mode in ContentMode]),
    help="structured, or binary: the event's data as the body and ce-* headers (webhooks and brokers).",
)
@click.option("--template", help="A robot's message template.")
@click.option("--default-template", is_flag=True, help="A robot's default message per event type again.")
@click.option("--secret", hidden=True, help="Refused: a new secret is rotate-secret's.")
@store_options
@click.pass_context
def update(
    ctx: click.Context,
    db_path: Target,
    policy: AddressPolicy,
    name: str,
    url: str | None,
    types: tuple[str, ...],
    filters: tuple[str, ...],
    no_filters: bool,
    max_in_flight: int | None,
    timeout: float | None,
    retry_schedule: tuple[float, ...] | None,
    default_retry_schedule: bool,
    store_response: bool | None,
    kind: str | None,
    rate: Rate | None,
    no_rate: bool,
    handshake: bool | None,
    content_mode: str | None,
    template: str | None,
    default_template: bool,
    secret: str | None,
) -> None:
    """Change the options given of subscriber NAME; the others stay as they are (a new secret: rotate-secret)."""
    if secret is not None:
        # As the API's PATCH refuses one: a new secret is a rotation, the old one signing through a grace period.
        raise Mistake(f"change a secret with `cos-relay subscribers rotate-secret {name}`")
    # The body of a PATCH: a key per option given, each as add passes it; the service checks them all together.
    given: dict[str, object] = {
        "url": url,
        "types": types or None,
        "filters": filters or None,
        "max_in_flight": max_in_flight,
        "timeout": timeout,
        "retry_schedule": retry_schedule,
        "store_response": store_response,
        "kind": None if kind is None else Kind(kind),
        "rate": rate,
        "handshake": handshake,
        "content_mode": None if content_mode is None else ContentMode(content_mode),
        "template": template,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    # What the API's null means for each (no filter is an empty set, not null), and the flag asking for it.
    for key, cleared, clear, option, clearing in (
        ("filters", (), no_filters, "--filter", "--no-filters"),
        ("retry_schedule", None, default_retry_schedule, "--retry-schedule", "--default-retry-schedule"),
        ("rate", None, no_rate, "--rate", "--no-rate"),
        ("template", None, default_template, "--template", "--default-template"),
    ):
        if clear and key in changes:
            raise Mistake(f"give {option} or {clearing}, not both")
        if clear:
            changes[key] = cleared
    if not changes:
        raise Mistake(f"nothing to update: give at least one of {_changes_of(ctx.command)}")
    with subscribers_service(db_path, policy) as service:
        updated = service.update(name, changes)
        _echo_fields(service.shown(updated))
    if updated.source == "config":
        # As with the API's PATCH: allowed, but the file is what `serve --config` applies at its next start.
        click.echo(
            f"note: {name} is defined in the config file; change it there too, or its next start undoes this", err=True
        )


@subscribers.command()
@click.argument("name")
@store_options
def secret(db_path: Target, policy: AddressPolicy, name: str) -> None:
    """Print the secret(s) NAME's events are signed with now, to verify their signatures."""
    with subscribers_service(db_path, policy) as service:
        shown = service.secrets(name)
    click.echo(f"secret: {shown['secret']}")
    if shown["previous_secret"] is not None:
        until = units.instant(shown["previous_secret_expires_at"])
        click.echo(f"previous_secret: {shown['previous_secret']} (signs too until {until})")


@subscribers.command()
@click.argument("name")
@store_options
def pause(db_path: Target, policy: AddressPolicy, name: str) -> None:
    """Hold deliveries to NAME until it is resumed (nothing is lost)."""
    with subscribers_service(db_path, policy) as service:
        paused = service.pause(name)
    click.echo(f"{paused.name}: {paused.state.value}")


@subscribers.command()
@click.argument("name")
@store_options
def resume(db_path: Target, policy: AddressPolicy, name: str) -> None:
    """Enable a paused or disabled subscriber; its held deliveries flow again."""
    with subscribers_service(db_path, policy) as service:
        resumed = service.resume(name)
    click.echo(f"{resumed.name}: {resumed.state.value}")


@subscribers.command()
@click.argument("name")
@store_options
def remove(db_path: Target, policy: AddressPolicy, name: str) -> None:
    """Remove NAME; its pending deliveries are cancelled."""
    with subscribers_service(db_path, policy) as service:
        cancelled = service.remove(name)
    click.echo(f"removed {name}; cancelled {cancelled} pending deliveries")


@subscribers.command(name="rotate-secret")
@click.argument("name")
@click.option(
    "--secret",
    help="The new secret (whsec_<base64>); generated when omitted. A Feishu or DingTalk robot's: the one its platform"
    " shows (required).",
)
@setting_option("secret_grace", option="--grace", dest="grace")
@store_options
def rotate_secret(db_path: Target, policy: AddressPolicy, name: str, secret: str | None, grace: float) -> None:
    """Give NAME a new signing secret and print it (once); the old one signs too for a while."""
    with subscribers_service(db_path, policy, secret_grace=timedelta(seconds=grace)) as service:
        rotated = service.rotate_secret(name, secret)
    shown = rotated.public(reveal_secret=True)
    click.echo(f"new secret: {shown['secret']}")
    click.echo(f"the previous secret keeps signing until {units.instant(shown['previous_secret_expires_at'])}")
    click.echo(SHOWN_ONCE)


@subscribers.command()
@click.argument("name")
@click.option(
    "--since",
    required=True,
    callback=_since,
    help="Requeue failed and dead deliveries created since: 90s, 30m, 2h, 7d or an ISO-8601 instant.",
)
@store_options
def recover(db_path: Target, policy: AddressPolicy, name: str, since: datetime) -> None:
    """Queue again every failed, dead or dropped delivery to NAME created since --since."""
    with existing_store(db_path) as store:
        service = Subscribers(store, policy, utc_now)
        subscriber = service.get(name)
        # Only to size the bar: the service decides what it requeues.
        expected = len(store.recoverable(subscriber.id, since, 0, -1))
        with click.progressbar(length=expected, label=f"requeueing deliveries to {name}") as bar:
            requeued = service.recover(name, since, progress=lambda done: bar.update(done - bar.pos))
    click.echo(f"requeued {requeued} deliveries created since {since.isoformat()}")
