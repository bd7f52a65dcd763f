"""``cos-relay prune`` and ``cos-relay backup``: retention on demand and a consistent copy, both while serve runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from relay.cli.database import existing_store
from relay.cli.options import db_option
from relay.cli.table import render_table
from relay.domain.clock import utc_now
from relay.domain.retention import Windows
from relay.maintenance.pruning import Pruner
from relay.settings.durations import Duration
from relay.settings.table import setting_named
from relay.store.failures import StoreError
from relay.store.records import Target

F = TypeVar("F", bound=Callable[..., Any])


class DurationType(click.ParamType[float]):
    """``7d``, ``12h``, ``0s`` (everything up to now) or ``forever`` (nothing), read by the settings' parser."""

    name = "duration"
    kind = Duration(zero=True, forever=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return float(self.kind.parse(value)) if isinstance(value, str) else float(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


def _window_option(option: str, field: str, what: str) -> Callable[[F], F]:
    setting = setting_named(field)
    return click.option(
        option,
        type=DurationType(),
        envvar=setting.env,
        show_envvar=True,
        default=setting.default_text,
        show_default=True,
        help=f"Remove {what} older than this, instead of {setting.env} (0s: everything; forever: none).",
    )


@click.command()
@_window_option("--older-than", "retention", "raw callbacks, finished deliveries and the events they needed")
@_window_option("--jobs-older-than", "job_retention", "job and workflow records")
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@db_option
def prune(db_path: Target, older_than: float, jobs_older_than: float, dry_run: bool) -> None:
    """Apply the retention windows now (safe while serve runs: small batches, each waits its turn to write).

    Deliveries still owed (pending, in flight, retrying, held for a paused subscriber) and their events are
    never removed.
    """
    windows = Windows.of_seconds(older_than, jobs_older_than)
    cutoffs = windows.cutoffs(utc_now())
    with existing_store(db_path) as store:
        if dry_run:
            counts = store.count_prunable(cutoffs)
        else:
            counts = anyio.run(Pruner(store, windows, utc_now).prune, cutoffs).counts
    header = ("kind", "would remove" if dry_run else "removed")
    click.echo(render_table([(kind, count) for kind, count in counts.items()], header))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@db_option
def backup(db_path: Target, file: Path) -> None:
    """Write a consistent copy of the database to FILE while serve keeps running (restore: docs/operations.md)."""
    with existing_store(db_path) as store:
        try:
            store.backup(file)
        except StoreError as error:
            raise click.ClickException(f"backup to {file} failed: {error}") from None
    click.echo(f"backed up {db_path} to {file} ({file.stat().st_size / 1e6:.1f} MB)")
