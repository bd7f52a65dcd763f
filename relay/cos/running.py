"""The reconciler loop inside serve: every COS source (``[[cos]]``) reconciled every ``reconcile_every`` by one replica
(`Store.claim_reconcile`), what it records going through the ingest path as a callback would (marked
``cosreconciled``). A COS failure is logged once per streak, counted by kind, and tried again with backoff (from
`RETRY_FIRST`, doubling, never longer than the interval); it never touches ingest, which shares nothing with it
but the store's writer. Started by the app factory beside the pruner and the shedder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from relay.cos.client import CosApi, CosUnavailable
from relay.cos.queues import points_here, shown_url, source_queues
from relay.cos.reconcile import Reconciler, Tally, recorder
from relay.cos.sources import CosSource
from relay.ingest import Ingest
from relay.metrics.counters import Metrics
from relay.store import Store
from relay.store.failures import StoreError

logger = logging.getLogger(__name__)

#: The first wait after a failure, in seconds; each failure in a row doubles it, up to the source's interval.
RETRY_FIRST = 30.0
#: COS writes creation times with an offset and no colon.
COS_TIME = "%Y-%m-%dT%H:%M:%S%z"


@dataclass(frozen=True)
class QueueCheck:
    """Where the source's queues should call back (RELAY_PUBLIC_URL's callback URL) and the callback tokens in
    force (the previous one too, in a rotation's grace): each run also checks that the queues point there."""

    url: str
    tokens: Callable[[], tuple[str, ...]]


class Reconciling:
    """One task per source; ``api`` makes a source's client (tests give the stand-in's transport)."""

    def __init__(
        self,
        sources: list[CosSource],
        store: Store,
        ingest: Ingest,
        clock: Callable[[], datetime],
        metrics: Metrics,
        api: Callable[[CosSource], CosApi],
        queues: QueueCheck | None = None,
    ) -> None:
        self._sources = sources
        self._store = store
        self._ingest = ingest
        self._clock = clock
        self._metrics = metrics
        self._api = api
        self._queues = queues
        #: Sources whose last run failed: a failure is logged when a streak begins, not at every retry.
        self._failing: set[str] = set()
        for source in sources:  # every outcome's series exists from the start, for increase()
            self._metrics.reconcile_runs.labels(source.name, "ok")
            self._metrics.missed_callbacks.labels(source.name)

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            for source in self._sources:
                tasks.start_soon(self._loop, source)

    async def _loop(self, source: CosSource) -> None:
        failures = 0
        while True:
            ok = await self.once(source)
            failures = 0 if ok else failures + 1
            wait = source.reconcile_every if ok else min(source.reconcile_every, RETRY_FIRST * 2 ** (failures - 1))
            await anyio.sleep(wait)

    async def once(self, source: CosSource) -> bool:
        """Reconcile ``source`` now if no replica did in its interval; False when COS (or the store) failed."""
        try:
            if not await self._store.claim_reconcile(source.name, self._clock(), source.reconcile_every):
                return True  # another replica has this interval
        except StoreError as error:
            logger.warning("could not claim the reconciliation of %s: %s", source.name, error)
            return False
        api = self._api(source)
        try:
            tally = await Reconciler(source, api, recorder(self._ingest, source.name, self._clock), self._clock).run()
            if self._queues is not None:
                await self._check_queues(source, api, self._queues)
        except (CosUnavailable, StoreError) as error:
            kind = error.kind if isinstance(error, CosUnavailable) else "store"
            self._metrics.reconcile_runs.labels(source.name, kind).inc()
            if source.name not in self._failing:
                self._failing.add(source.name)
                logger.warning(
                    "reconciling %s failed (tried again with backoff; counted in relay_cos_reconcile_runs_total): %s",
                    source.name,
                    error,
                    extra={"action": "reconcile_failed"},
                )
            return False
        finally:
            await api.aclose()
        if source.name in self._failing:
            self._failing.discard(source.name)
            logger.info("reconciling %s works again", source.name, extra={"action": "reconcile_recovered"})
        self._shown(source, tally)
        flying = [(job.job_id, job.state, job.tag, job.created) for job in tally.in_flight]
        try:
            await self._store.replace_in_flight(source.name, flying, self._clock())
        except StoreError as error:
            logger.warning("could not keep %s's jobs in flight: %s", source.name, error)
        return True

    async def _check_queues(self, source: CosSource, api: CosApi, check: QueueCheck) -> None:
        tokens = check.tokens()
        seen = []
        for queue in await source_queues(api, source):
            here = points_here(queue, check.url, tokens)
            self._metrics.queue_here.labels(source.name, queue.queue_id).set(1 if here else 0)
            where = shown_url(queue.callback_url) if queue.callback_on else "off"
            seen.append((queue.queue_id, queue.family, queue.name, queue.state, where, here))
        # Kept for the console's overview (any worker or replica shows them), as `cos-relay cos status` prints them.
        await self._store.replace_queues(source.name, seen, self._clock())

    def _shown(self, source: CosSource, tally: Tally) -> None:
        now = self._clock()
        self._metrics.reconcile_runs.labels(source.name, "ok").inc()
        self._metrics.missed_callbacks.labels(source.name).inc(tally.recorded)
        self._metrics.jobs_in_flight.labels(source.name).set(len(tally.in_flight))
        created = [_created(job.created) for job in tally.in_flight]
        known = [moment for moment in created if moment is not None]
        self._metrics.oldest_in_flight.labels(source.name).set((now - min(known)).total_seconds() if known else 0)
        self._metrics.last_reconcile.labels(source.name).set(now.timestamp())
        if tally.recorded:
            logger.warning(
                "reconciling %s found %d job state(s) no callback had brought: recorded and relayed",
                source.name,
                tally.recorded,
                extra={"action": "reconcile_missed"},
            )


def _created(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, COS_TIME).astimezone(UTC)
    except ValueError:
        return None
