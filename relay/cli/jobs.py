"""``cos-relay jobs``: the job API's data as tables, for someone at a terminal."""

from __future__ import annotations

import functools

import anyio
import click
from click.core import ParameterSource

from relay.api.params import MAX_LIMIT
from relay.cli import units
from relay.cli.database import existing_store
from relay.cli.options import Whole, db_option, one_of
from relay.cli.table import render_table
from relay.domain.callback import JOB_STATES
from relay.store.answers import Job, JobInput
from relay.store.records import Target

_COLUMNS = ("job_id", "state", "tag", "end_time", "object")


def _row(job: Job) -> tuple[str, ...]:
    return (job["job_id"], job["state"], job["tag"] or "-", job["end_time"] or "-", job["input"]["object"] or "-")


@click.group(invoke_without_command=True)
@db_option
@click.option(
    "--state",
    callback=one_of(JOB_STATES, "a job state"),
    help=f"Only jobs in this state: {', '.join(JOB_STATES)} (any case).",
)
@click.option("--tag", help="Only jobs with this Tag (Transcode, Snapshot, ...).")
@click.option("--limit", type=Whole(1, MAX_LIMIT), default=50, show_default=True, help="How many jobs, newest first.")
@click.pass_context
def jobs(ctx: click.Context, db_path: Target, state: str | None, tag: str | None, limit: int) -> None:
    """List jobs, newest first."""
    ctx.obj = db_path
    if ctx.invoked_subcommand is not None:
        return
    with existing_store(db_path) as store:
        page = anyio.run(functools.partial(store.list_jobs, state=state, tag=tag, limit=limit))
    if not page.items:
        click.echo("no jobs")
        return
    click.echo(render_table([_row(job) for job in page.items], _COLUMNS))


@jobs.command()
@click.argument("job_id")
@db_option
@click.pass_context
def show(ctx: click.Context, db_path: Target, job_id: str) -> None:
    """Show one job with its state history."""
    # ``--db`` after the subcommand, as everywhere else; before it (``jobs --db X show ID``) still works.
    if ctx.get_parameter_source("db_path") is ParameterSource.DEFAULT:
        db_path = ctx.obj
    with existing_store(db_path) as store:
        job = anyio.run(store.get_job, job_id)
    if job is None:
        raise click.ClickException(f"job {job_id} is not known")
    fields = [
        ("job_id", job["job_id"]),
        ("state", job["state"]),
        ("tag", job["tag"]),
        ("queue_id", job["queue_id"]),
        ("code", job["code"]),
        ("message", job["message"]),
        ("input", _input(job["input"])),
        ("created", job["creation_time"]),
        ("started", job["start_time"]),
        ("ended", job["end_time"]),
    ]
    confirmation = job["confirmation"]
    if confirmation is not None:  # its state came for a COS source with confirm = true (docs/cos.md)
        why = f" ({confirmation['reason']}, COS has: {confirmation['seen'] or 'no such job'})"
        shown = (
            f"{confirmation['status']}{why if confirmation['reason'] else ''}, callback {confirmation['callback_id']}"
        )
        fields.append(("confirmed", shown))
    for name, value in fields:
        click.echo(f"{name:<10} {value if value is not None else '-'}")
    click.echo("history:")
    click.echo(
        render_table(
            [
                (units.instant(h["received_at"]), h["state"], h["code"] or "-", h["end_time"] or "-")
                for h in job["history"]
            ],
            ("received_at", "state", "code", "end_time"),
        )
    )


def _input(given: JobInput) -> str | None:
    """``object (bucket, region)``, leaving out what COS did not send."""
    where = ", ".join(value for value in (given["bucket"], given["region"]) if value)
    shown = " ".join(value for value in (given["object"], f"({where})" if where else None) if value)
    return shown or None


@jobs.command()
@click.option("--job-id", help="Only this job id.")
@click.option("--limit", type=Whole(1, MAX_LIMIT), default=50, show_default=True, help="How many, newest first.")
@db_option
@click.pass_context
def nonexistent(ctx: click.Context, job_id: str | None, limit: int, db_path: Target) -> None:
    """List the job ids COS reported it does not know (NonExistJobIds), newest first, with their callbacks."""
    if ctx.get_parameter_source("db_path") is ParameterSource.DEFAULT:
        db_path = ctx.obj
    with existing_store(db_path) as store:
        page = anyio.run(functools.partial(store.list_nonexistent, job_id=job_id, limit=limit))
    if not page.items:
        click.echo("no job ids reported as nonexistent")
        return
    rows = [(item["job_id"], f"#{item['callback_id']}", units.instant(item["received_at"])) for item in page.items]
    click.echo(render_table(rows, ("job_id", "callback", "received_at")))
