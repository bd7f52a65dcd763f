"""Reconciling a source: list the jobs COS created in the lookback window and record those in a final state that
the store does not have in that state, through the ingest path a callback takes (FORMAT.md §10: callbacks are
at-least-once, possibly zero). A job recorded this way is deduplicated like any callback: its event goes out
once, and the callback arriving later is a duplicate. Jobs not yet final are tallied as in flight.

COS's list answers have the callback's own shape (``<Response><JobsDetail>…``), so each page's final jobs become
one callback body (``TaskFinish``) for ``record``; what ``record`` does with it (the ingest, the source marking)
is the caller's.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lxml import etree

from relay.cos.client import CosApi, Family
from relay.cos.sources import CosSource
from relay.domain.callback import Received
from relay.ingest import Ingest

#: The states after which a job changes no more.
FINAL_STATES = frozenset({"Success", "Failed", "Cancel"})
#: A workflow run's final states (the only ones COS calls back for).
FINAL_RUN_STATES = frozenset({"Success", "Failed"})

#: Records one callback body (the ingest path); answers how many of its items were new.
Record = Callable[[bytes], Awaitable[int]]


@dataclass(frozen=True)
class InFlight:
    """A job COS has not finished: what the in-flight list and its age metric show."""

    job_id: str
    state: str
    tag: str
    created: str


@dataclass
class Tally:
    """One run over one source: jobs and workflow runs listed, final ones already known, final ones recorded now,
    and jobs in flight."""

    listed: int = 0
    known: int = 0
    recorded: int = 0
    in_flight: list[InFlight] = field(default_factory=list)


def found(body: bytes, at: datetime, source: str) -> Received:
    """A page's final jobs as the callback the ingest path records: its "from" is the source (``cos:media``,
    where a callback COS posted has the address it came from), and its events carry ``cosreconciled``."""
    return Received(at, f"cos:{source}", "application/xml", body, "xml", reconciled_from=source)


def recorder(ingest: Ingest, source: str, clock: Callable[[], datetime]) -> Record:
    """What a reconciliation of ``source`` records through: ``ingest`` (each body read in a worker thread, so
    callbacks keep being answered), counting the new items."""

    async def record(body: bytes) -> int:
        _, result = await ingest.ingest_in_thread(found(body, clock(), source))
        return len(result.new_items)

    return record


def final_jobs(root: etree._Element) -> tuple[bytes | None, int]:
    """A callback body of the page's jobs in a final state, as COS would have sent them, and how many."""
    details = [detail for detail in root.findall("JobsDetail") if detail.findtext("State") in FINAL_STATES]
    if not details:
        return None, 0
    response = etree.Element("Response")
    etree.SubElement(response, "EventName").text = "TaskFinish"
    response.extend(copy.deepcopy(detail) for detail in details)
    return etree.tostring(response, encoding="utf-8", xml_declaration=True), len(details)


def final_runs(root: etree._Element) -> list[bytes]:
    """A callback body (``WorkflowFinish``) for each finished workflow run of a list page, as COS would send it."""
    bodies = []
    for execution in root.findall("WorkflowExecution"):
        if execution.findtext("State") in FINAL_RUN_STATES:
            response = etree.Element("Response")
            etree.SubElement(response, "EventName").text = "WorkflowFinish"
            response.append(copy.deepcopy(execution))
            bodies.append(etree.tostring(response, encoding="utf-8", xml_declaration=True))
    return bodies


class Reconciler:
    """Runs over one source's job lists with ``api``, recording what was missed through ``record``."""

    def __init__(self, source: CosSource, api: CosApi, record: Record, clock: Callable[[], datetime]) -> None:
        self._source = source
        self._api = api
        self._record = record
        self._clock = clock

    def lists(self) -> Iterator[tuple[Family, str | None, str | None]]:
        """Every (family, tag, queue) list the source names: each media tag in each queue (or all queues)."""
        queues: tuple[str | None, ...] = self._source.queues or (None,)
        for tag in self._source.tags:
            for queue in queues:
                yield "media", tag, queue
        if self._source.pictures:
            for queue in queues:
                yield "pictures", "PicProcess", queue
        fixed: tuple[tuple[Family, bool], ...] = (
            ("speech", self._source.speech),
            ("documents", self._source.documents),
        )
        for family, wanted in fixed:
            if wanted:
                for queue in queues:
                    yield family, None, queue

    async def run(self, since: timedelta | None = None, progress: Callable[[Tally], None] | None = None) -> Tally:
        """List every job created in the lookback (or ``since``) up to now and record the final ones missed (a
        dry run passes a ``record`` that only counts); ``progress`` is told the tally after each page.
        `CosUnavailable` when COS fails."""
        end = self._clock()
        start = end - (since if since is not None else timedelta(seconds=self._source.lookback))
        tally = Tally()
        for family, tag, queue in self.lists():
            async for page in self._api.list_jobs(family, start=start, end=end, tag=tag, queue=queue):
                details = page.root.findall("JobsDetail")
                tally.listed += len(details)
                tally.in_flight += [
                    InFlight(
                        str(detail.findtext("JobId")),
                        str(detail.findtext("State")),
                        str(detail.findtext("Tag")),
                        str(detail.findtext("CreationTime")),
                    )
                    for detail in details
                    if detail.findtext("State") not in FINAL_STATES
                ]
                body, finals = final_jobs(page.root)
                new = await self._record(body) if body is not None else 0
                tally.recorded += new
                tally.known += finals - new
                if progress is not None:
                    progress(tally)
        for workflow in self._source.workflows:
            async for page in self._api.list_workflow_runs(workflow, start=start, end=end):
                runs = page.root.findall("WorkflowExecution")
                tally.listed += len(runs)
                for body in final_runs(page.root):
                    new = await self._record(body)
                    tally.recorded += new
                    tally.known += 1 - new
                if progress is not None:
                    progress(tally)
        return tally
