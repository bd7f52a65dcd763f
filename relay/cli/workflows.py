"""``cos-relay workflows``: workflow runs as tables, for someone at a terminal (the API's ``/api/workflows``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import click
from click.core import ParameterSource

from relay.api.params import MAX_LIMIT
from relay.cli import units
from relay.cli.database import existing_store
from relay.cli.options import Whole, db_option, one_of
from relay.cli.table import render_table
from relay.domain.callback import WORKFLOW_STATES
from relay.store.records import Target

F = TypeVar("F", bound=Callable[..., Any])


def _listing_options(command: F) -> F:
    for option in reversed(
        (
            db_option,
            click.option(
                "--state",
                callback=one_of(WORKFLOW_STATES, "a workflow run state"),
                help=f"Only runs in this state: {', '.join(WORKFLOW_STATES)} (any case).",
            ),
            click.option("--workflow-id", help="Only runs of this workflow."),
            click.option(
                "--limit", type=Whole(1, MAX_LIMIT), default=50, show_default=True, help="How many runs, newest first."
            ),
        )
    ):
        command = option(command)
    return command


@click.group(invoke_without_command=True)
@_listing_options
@click.pass_context
def workflows(ctx: click.Context, db_path: Target, state: str | None, workflow_id: str | None, limit: int) -> None:
    """List workflow runs, most recently updated first (also `workflows list`); `workflows show RUN_ID` shows one
    with its tasks."""
    ctx.obj = db_path
    if ctx.invoked_subcommand is None:
        _list(db_path, state, workflow_id, limit)


@workflows.command(name="list")
@_listing_options
def list_(db_path: Target, state: str | None, workflow_id: str | None, limit: int) -> None:
    """List workflow runs, most recently updated first."""
    _list(db_path, state, workflow_id, limit)


def _list(db_path: Target, state: str | None, workflow_id: str | None, limit: int) -> None:
    with existing_store(db_path) as store:
        listing = functools.partial(store.list_workflows, state=state, workflow_id=workflow_id, limit=limit)
        page = anyio.run(listing)
    if not page.items:
        click.echo("no workflow runs")
        return
    rows = [
        (
            run["run_id"],
            run["state"],
            run["workflow_name"] or run["workflow_id"] or "-",
            units.instant(run["updated_at"]),
        )
        for run in page.items
    ]
    click.echo(render_table(rows, ("run_id", "state", "workflow", "updated_at")))


@workflows.command()
@click.argument("run_id")
@db_option
@click.pass_context
def show(ctx: click.Context, db_path: Target, run_id: str) -> None:
    """Show one workflow run with its tasks and state history (a task's JobId finds its run too)."""
    if ctx.get_parameter_source("db_path") is ParameterSource.DEFAULT:
        db_path = ctx.obj
    with existing_store(db_path) as store:
        run = anyio.run(store.get_workflow, run_id)
        if run is None and (owner := anyio.run(store.run_of_task, run_id)) is not None:
            run = anyio.run(store.get_workflow, owner)
    if run is None:
        raise click.ClickException(f"no workflow run has the id {run_id} (nor a task of one)")
    for name in ("run_id", "state", "workflow_id", "workflow_name", "bucket", "object_key", "create_time"):
        if run[name] is not None:
            click.echo(f"{name:<14} {run[name]}")
    click.echo("tasks:")
    tasks = [
        (task["name"] or "-", task["type"] or "-", task["state"] or "-", task["job_id"] or "-") for task in run["tasks"]
    ]
    click.echo(render_table(tasks, ("name", "type", "state", "job_id")) if tasks else "  none")
    click.echo("history:")
    history = [(units.instant(entry["received_at"]), entry["state"]) for entry in run["history"]]
    click.echo(render_table(history, ("received_at", "state")))


def _workflow(run: dict[str, Any]) -> str:
    return str(run["workflow_name"] or run["workflow_id"] or "-")
