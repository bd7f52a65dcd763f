"""The confirmer inside serve: the jobs of callbacks for a COS source with ``confirm = true`` are read back from COS
(``GET /jobs/<id>,<id>``, each family's path, ten ids a request; a workflow run by ``GET /workflowexecution/<RunId>``)
before their events go out.

Each pass takes a source's oldest waiting jobs (`BATCH`), reads them back per family and applies what COS said
(`Store.settle_confirmations`): the same state releases the job's deliveries (the delivery worker is woken); a job
COS does not know, or has in another state, is held for good and counted. While COS fails (403, 404, 429, 5xx, a
timeout), the jobs keep waiting: the failure is counted, logged when a streak begins, and the source is tried
again after `RETRY_FIRST`, doubling up to `RETRY_MOST`. Nothing is released that COS did not confirm.

Replicas share the work like reconciliation: a pass over a source is claimed in the database for `EVERY`
seconds, so one replica reads a source's waiting jobs at a time (a second finding the claim taken waits its
turn; a settle repeats its rule, so a verdict is applied once). Started by the app factory beside the
reconciler; ``once`` is the step the tests drive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import anyio

from relay.cos.client import IDS_PER_READ, CosApi, CosUnavailable
from relay.cos.sources import CosSource
from relay.domain.confirm import REASONS, ConfirmFamily, ConfirmScope, ToConfirm, Verdict, verdict
from relay.metrics.counters import Metrics
from relay.store import Store
from relay.store.failures import StoreError

logger = logging.getLogger(__name__)

#: How often each source's waiting jobs are looked for: ingest wakes the confirmer when it holds some, but a pass
#: starts at most this often, so a busy second's callbacks are read back together (ten to a request), and the
#: claim (a write) is made at most once a second.
EVERY = 1.0
#: Jobs taken per pass and source (a hundred requests to COS at most).
BATCH = 1000
#: After a failure, the source is tried again after this, doubling each time in a row, up to `RETRY_MOST`.
RETRY_FIRST, RETRY_MOST = 1.0, 60.0


def scopes(sources: Sequence[CosSource]) -> list[ConfirmScope]:
    """The sources with ``confirm = true``, as ingest sees them: name, bucket, the families they name."""
    chosen = []
    for source in sources:
        if source.confirm:
            named: dict[ConfirmFamily, bool] = {
                "media": bool(source.tags),
                "pictures": source.pictures,
                "speech": source.speech,
                "documents": source.documents,
                "workflow": bool(source.workflows),
            }
            chosen.append(
                ConfirmScope(source.name, source.bucket, frozenset(family for family, on in named.items() if on))
            )
    return chosen


class Confirming:
    """Reads back the waiting jobs of every source with ``confirm``; ``api`` makes a source's client, ``on_release``
    wakes the delivery worker."""

    def __init__(
        self,
        sources: Sequence[CosSource],
        store: Store,
        clock: Callable[[], datetime],
        metrics: Metrics,
        api: Callable[[CosSource], CosApi],
        on_release: Callable[[], None],
    ) -> None:
        self._sources = [source for source in sources if source.confirm]
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._api = api
        self._on_release = on_release
        self._woken = anyio.Event()
        #: Per failing source: failures in a row, and when to try it again.
        self._failing: dict[str, tuple[int, datetime]] = {}
        #: Each source's client, made once: a new httpx client builds an SSL context, tens of milliseconds of the
        #: event loop that answers callbacks (it showed in their p99 when a client was made at every pass).
        self._apis: dict[str, CosApi] = {}
        for source in self._sources:  # every series exists from the start, for increase()
            self._metrics.confirmed.labels(source.name)
            for reason in REASONS:
                self._metrics.unconfirmed.labels(source.name, reason)

    def wake(self) -> None:
        """Ingest held jobs: look now rather than at the next tick."""
        self._woken.set()

    async def run(self) -> None:
        try:
            while True:
                started = anyio.current_time()
                self._woken = anyio.Event()
                for source in self._sources:
                    failing = self._failing.get(source.name)
                    if failing is None or failing[1] <= self._clock():
                        await self.once(source)
                with anyio.move_on_after(EVERY):
                    await self._woken.wait()
                await anyio.sleep(max(0.0, started + EVERY - anyio.current_time()))
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    async def aclose(self) -> None:
        """Close the sources' clients."""
        apis, self._apis = list(self._apis.values()), {}
        for api in apis:
            await api.aclose()

    async def once(self, source: CosSource) -> bool:
        """One pass over ``source``'s waiting jobs; False when COS (or the store) failed (they keep waiting)."""
        try:
            waiting = await self._store.waiting_confirmations(source.name, BATCH)
            if not waiting or not await self._store.claim_reconcile(f"{source.name}/confirm", self._clock(), EVERY):
                return True
            await self._confirm(source, waiting)
        except (CosUnavailable, StoreError) as error:
            self._failed(source, error)
            return False
        if self._failing.pop(source.name, None) is not None:
            logger.info("confirming %s's callbacks works again", source.name, extra={"action": "confirm_recovered"})
        return True

    async def _confirm(self, source: CosSource, waiting: list[ToConfirm]) -> None:
        api = self._apis.get(source.name) or self._apis.setdefault(source.name, self._api(source))
        families: dict[str, list[ToConfirm]] = {}
        for job in waiting:
            families.setdefault(job.family, []).append(job)
        for family, jobs in families.items():
            ids = list(dict.fromkeys(job.job_id for job in jobs))
            # Jobs are read ten to a request; a workflow run has a request of its own.
            size = 1 if family == "workflow" else IDS_PER_READ
            for start in range(0, len(ids), size):
                chunk = set(ids[start : start + size])
                if family == "workflow":
                    [run_id] = chunk
                    found = (await api.read_run(run_id)).root.findall("WorkflowExecution")
                    answered = {str(run.findtext("RunId")): str(run.findtext("State")) for run in found}
                else:
                    found = (await api.read_jobs(family, sorted(chunk))).root.findall("JobsDetail")
                    answered = {str(job.findtext("JobId")): str(job.findtext("State")) for job in found}
                # Settled a read at a time: what COS answered is kept even if a later read fails.
                await self._settle(source, [verdict(job, answered) for job in jobs if job.job_id in chunk])

    async def _settle(self, source: CosSource, verdicts: list[Verdict]) -> None:
        applied = await self._store.settle_confirmations(verdicts, self._clock())
        released = [each for each in applied if each.reason is None]
        if released:
            self._metrics.confirmed.labels(source.name).inc(len(released))
            self._on_release()
        for each in applied:
            if each.reason is not None:
                self._metrics.unconfirmed.labels(source.name, each.reason).inc()
                logger.warning(
                    "COS did not confirm a callback's job for %s (%s%s): its events are held (release or discard its"
                    " callback in the console, or with cos-relay cos release|discard)",
                    source.name,
                    each.reason,
                    f": COS has it {each.seen}" if each.seen else "",
                    extra={"action": "unconfirmed", "job_id": each.job_id},
                )

    def _failed(self, source: CosSource, error: CosUnavailable | StoreError) -> None:
        kind = error.kind if isinstance(error, CosUnavailable) else "store"
        self._metrics.confirm_failures.labels(source.name, kind).inc()
        failures = self._failing.get(source.name, (0, self._clock()))[0] + 1
        wait = min(RETRY_MOST, RETRY_FIRST * 2 ** (failures - 1))
        self._failing[source.name] = (failures, self._clock() + timedelta(seconds=wait))
        if failures == 1:
            logger.warning(
                "confirming %s's callbacks failed (their events wait, tried again with backoff; counted in"
                " relay_cos_confirm_failures_total): %s",
                source.name,
                error,
                extra={"action": "confirm_failed"},
            )
