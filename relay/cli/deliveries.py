"""``cos-relay deliveries``: what was sent to whom, every attempt, and retrying one by hand."""

from __future__ import annotations

from typing import Any

import click

from relay.api.params import MAX_ID, MAX_LIMIT
from relay.cli import units
from relay.cli.database import existing_store
from relay.cli.options import Whole, db_option, one_of
from relay.cli.subscribers import subscribers_service
from relay.cli.table import render_table
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import DELIVERY_STATES
from relay.domain.errors import UnknownSubscriber
from relay.store.answers import Delivery
from relay.store.records import Target

#: ``id`` is ``-`` for a delivery with no row (the event log's): it is shown and retried by subscriber and event_id.
_COLUMNS = (
    "id",
    "state",
    "subscriber",
    "event_type",
    "subject",
    "attempts",
    "last_status",
    "next_attempt_at",
    "event_id",
)
_ATTEMPT_COLUMNS = ("started_at", "trigger", "outcome", "status", "duration", "error")


def _cell(value: Any, name: str = "") -> str:
    if name.endswith("_at"):
        return units.instant(value)
    if name == "duration":
        return units.duration(value)
    return "-" if value is None or value == "" else str(value)


#: States with no next attempt to show, whatever the row still holds: nothing more is tried, or nothing until COS
#: confirms the job.
_FINISHED = frozenset({"delivered", "dead", "dropped", "cancelled", "unconfirmed", "confirming"})


def _row(delivery: Delivery) -> tuple[str, ...]:
    finished, shown = delivery["state"] in _FINISHED, dict(delivery)
    return tuple(
        "-" if finished and column == "next_attempt_at" else _cell(shown[column], column) for column in _COLUMNS
    )


@click.group()
def deliveries() -> None:
    """Look at deliveries to subscribers and retry them (works while the server runs)."""


@deliveries.command(name="list")
@click.option("--subscriber", help="Only deliveries to this subscriber.")
@click.option(
    "--state",
    callback=one_of(DELIVERY_STATES, "a delivery state"),
    help=f"Only deliveries in this state: {', '.join(DELIVERY_STATES)} (any case).",
)
@click.option("--event-id", help="Only deliveries of this event (its CloudEvents id).")
@click.option("--limit", type=Whole(1, MAX_LIMIT), default=50, show_default=True, help="How many, newest first.")
@db_option
def list_(db_path: Target, subscriber: str | None, state: str | None, event_id: str | None, limit: int) -> None:
    """List deliveries, newest first."""
    with existing_store(db_path) as store:
        if subscriber is not None and store.get_subscriber(subscriber) is None:
            known = (found.name for found in store.list_subscribers())
            raise click.ClickException(UnknownSubscriber.named(subscriber, known).detail)
        page = store.list_deliveries(subscriber=subscriber, state=state, event_id=event_id, limit=limit)
    if not page.items:
        click.echo("no deliveries")
        return
    click.echo(render_table([_row(delivery) for delivery in page.items], _COLUMNS))


#: A delivery with no row is addressed by these two instead of its ID.
_by_pair = (
    click.option("--subscriber", help="With --event-id, instead of ID: the delivery of that event to this subscriber."),
    click.option("--event-id", help="With --subscriber, instead of ID (a delivery with no row shows id -)."),
)


def _pair(delivery_id: int | None, subscriber: str | None, event_id: str | None) -> tuple[str, str] | None:
    """The (subscriber, event) a command names instead of an ID, or None when it names an ID; a usage error (exit 2)
    when it names neither or both."""
    if (delivery_id is None) == (subscriber is None or event_id is None):
        raise click.UsageError("give a delivery ID, or --subscriber and --event-id (not both)")
    return None if subscriber is None or event_id is None else (subscriber, event_id)


@deliveries.command()
@click.argument("delivery_id", metavar="ID", type=Whole(1, MAX_ID), required=False)
@_by_pair[0]
@_by_pair[1]
@db_option
def show(db_path: Target, delivery_id: int | None, subscriber: str | None, event_id: str | None) -> None:
    """Show delivery ID (or the delivery of --event-id to --subscriber) with its attempts log."""
    pair = _pair(delivery_id, subscriber, event_id)
    with existing_store(db_path) as store:
        if pair is None:
            delivery = store.get_delivery(delivery_id) if delivery_id is not None else None
            missing = f"no delivery has id {delivery_id}"
        else:
            found = store.get_subscriber(pair[0])
            if found is None:
                raise click.ClickException(
                    UnknownSubscriber.named(pair[0], (s.name for s in store.list_subscribers())).detail
                )
            delivery = store.delivery_of(found.id, pair[1])
            missing = f"event {pair[1]} is not owed to subscriber {pair[0]}"
    if delivery is None:
        raise click.ClickException(missing)
    attempts = [dict(attempt) for attempt in delivery["attempts_log"]]
    fields = {name: value for name, value in delivery.items() if name != "attempts_log"}
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        click.echo(f"{name.ljust(width)}  {_cell(value, name)}")
    if not attempts:
        click.echo("attempts: none yet")
        return
    click.echo("attempts:")
    click.echo(
        render_table([[_cell(a[column], column) for column in _ATTEMPT_COLUMNS] for a in attempts], _ATTEMPT_COLUMNS)
    )


@deliveries.command()
@click.argument("delivery_id", metavar="ID", type=Whole(1, MAX_ID), required=False)
@_by_pair[0]
@_by_pair[1]
@db_option
def retry(db_path: Target, delivery_id: int | None, subscriber: str | None, event_id: str | None) -> None:
    """Queue delivery ID (or the delivery of --event-id to --subscriber) again now (delivered, dead or waiting for a
    retry)."""
    pair = _pair(delivery_id, subscriber, event_id)
    # Retrying never changes a URL, so no address policy is involved.
    with subscribers_service(db_path, AddressPolicy()) as service:
        if pair is None:
            assert delivery_id is not None
            delivery = service.retry_delivery(delivery_id)
        else:
            delivery = service.retry_delivery_of(*pair)
    click.echo(f"delivery {delivery['id']} to {delivery['subscriber']} queued again ({delivery['state']})")
