"""``cos-relay reconcile``: one reconciliation of the config file's COS sources now (also while serve runs), a line
per source; exit 0 when every source answered, 1 with one line per source that did not."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import click

from relay.cli.database import existing_store
from relay.cli.maintenance import DurationType
from relay.cli.options import cos_config_option, db_option
from relay.cos.client import CosApi, CosUnavailable
from relay.cos.reconcile import Reconciler, Record, Tally, recorder
from relay.cos.sources import CosSource
from relay.ingest import Ingest, Reader
from relay.outbox.config_file import read_cos_sources
from relay.settings.durations import Duration
from relay.store import Store
from relay.store.records import Target
from relay.validate.parse import new_xml_parser
from relay.validate.schema import CallbackSchema


class Lookback(DurationType):
    """``--since``: a duration back from now, as the lookback is written (``2h``, ``7d``)."""

    kind = Duration(maximum=30 * 86400.0)


@click.command()
@cos_config_option
@click.option("--source", "names", multiple=True, help="Only this source (repeatable); default: every one.")
@click.option("--since", type=Lookback(), help="How far back to list, instead of each source's lookback (2h, 7d).")
@click.option("--dry-run", is_flag=True, help="Count what would be recorded; record nothing.")
@db_option
def reconcile(config_path: Path, names: tuple[str, ...], since: float | None, dry_run: bool, db_path: Target) -> None:
    """List the jobs COS created in each source's lookback and record the final ones the gateway missed."""
    sources = read_cos_sources(config_path)
    unknown = sorted(set(names) - {source.name for source in sources})
    if unknown:
        known = ", ".join(source.name for source in sources) or "none"
        raise click.BadParameter(f"no source named {', '.join(unknown)} in {config_path} (known: {known})")
    chosen = [source for source in sources if not names or source.name in names]
    if not chosen:
        raise click.ClickException(f"{config_path} names no COS source: add a [[cos]] table (docs/cos.md)")
    with existing_store(db_path) as store:
        failed = anyio.run(_run_all, store, chosen, since, dry_run)
    if failed:
        raise click.exceptions.Exit(1)


async def _run_all(store: Store, sources: list[CosSource], since: float | None, dry_run: bool) -> int:
    reader = Reader(CallbackSchema.load())
    failed = 0
    for source in sources:
        api = CosApi(source.endpoint, source.credentials, clock=time.time)
        record = (
            _counter(store, reader)
            if dry_run
            else recorder(Ingest(store, reader), source.name, lambda: datetime.now(UTC))
        )
        reconciler = Reconciler(source, api, record, lambda: datetime.now(UTC))
        try:
            tally = await reconciler.run(
                timedelta(seconds=since) if since is not None else None, progress=_progress(source.name)
            )
        except CosUnavailable as error:
            click.echo(f"{source.name}: not reconciled: {error}", err=True)
            failed += 1
            continue
        finally:
            await api.aclose()
        click.echo(_summary(source.name, tally, dry_run))
    return failed


def _progress(name: str) -> Callable[[Tally], None]:
    """On a terminal, the jobs listed so far, on one line rewritten per page; elsewhere nothing."""
    terminal = sys.stderr.isatty()

    def show(tally: Tally) -> None:
        if terminal:
            click.echo(f"\r{name}: {tally.listed} listed, {tally.recorded} recorded so far", nl=False, err=True)

    return show


def _counter(store: Store, reader: Reader) -> Record:
    """For a dry run: how many of a body's jobs the store does not have in that state; nothing is written."""

    async def count(body: bytes) -> int:
        callback = reader.check(body, "xml", new_xml_parser())
        missing = 0
        for job in callback.jobs:
            known = await store.get_job(job.job_id)
            states = {state["state"] for state in known["history"]} if known else set()
            missing += job.state not in states
        return missing

    return count


def _summary(name: str, tally: Tally, dry_run: bool) -> str:
    if sys.stderr.isatty():
        click.echo("\r\033[K", nl=False, err=True)  # the progress line gives way to the summary
    recorded = "would be recorded" if dry_run else "recorded now"
    return (
        f"{name}: {tally.listed} listed, {tally.known} already known, {tally.recorded} {recorded},"
        f" {len(tally.in_flight)} in flight"
    )
