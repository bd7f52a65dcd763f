"""The shedder: keeps the database within RELAY_MAX_DB_SIZE and each subscriber's backlog within
RELAY_MAX_BACKLOG (docs/operations.md, "Disk bounds").

Size: from `SOFT_MARK` of the bound, the rows the raw window covers go early, oldest first (raw callbacks with
their dedup keys, finished deliveries with their attempts, events no delivery needs: a prune with the raw
cutoff at now), never a delivery still owed nor its event, nor job records. At the bound `at_bound` turns on
and the callback endpoint answers 503 with Retry-After (COS retries) until shedding (or delivery, or an
operator) has made room. What goes is counted in relay_pruned_rows_total and logged.

Backlog: a paused, disabled or failing subscriber holds every event owed to it as a pending delivery, which
no prune removes (a delivery still owed never goes). Past the bound, its oldest pending deliveries become ``dropped``:
finished, so the raw window prunes them like dead ones; counted (relay_deliveries_given_up_total with
reason ``backlog_full``), logged, listed (``GET /api/deliveries?state=dropped``) and requeued by hand like
dead ones (retry, ``subscribers recover``). Started by the app factory beside the pruner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import anyio

from relay.domain.retention import Cutoffs
from relay.metrics import Metrics
from relay.store import Store
from relay.store.failures import StoreError

logger = logging.getLogger(__name__)

#: How often the size is checked (a stat and a page count): what can arrive past the bound arrives within it.
INTERVAL = 1.0
#: Backlogs are checked every this many size checks: one pass over the pending deliveries' index.
BACKLOG_EVERY = 5
#: Deliveries dropped per subscriber per batch (one short write each).
BATCH = 1000
#: From this share of the size bound, rows go early and the alert fires.
SOFT_MARK = 0.8
#: Rows of each kind per shedding batch, and batches per check at most (the writer stays shared with ingest).
SHED_ROWS = 100
SHED_BATCHES = 50
#: Free pages given back per shedding batch (SQLite files in auto_vacuum=INCREMENTAL).
RECLAIM = 512


class Shedder:
    def __init__(
        self,
        store: Store,
        max_backlog: int,
        clock: Callable[[], datetime],
        *,
        max_db_size: int | None = None,
        metrics: Metrics | None = None,
        interval: float = INTERVAL,
        batch: int = BATCH,
    ) -> None:
        self._store = store
        self._max_backlog = max_backlog
        self._max_db_size = max_db_size
        #: The database is at its size bound (as last measured): callbacks are refused (503).
        self.at_bound = False
        self._clock = clock
        self._metrics = metrics
        self._interval = interval
        self._batch = batch

    async def bound_backlogs(self) -> dict[str, int]:
        """Drop what is over the backlog bound, a batch at a time, until every backlog is within it; how many, by
        subscriber."""
        total: dict[str, int] = {}
        while True:
            batch = await self._store.drop_backlog(self._max_backlog, self._batch, self._clock())
            dropped = {name: n for name, n in batch.items() if n}
            if not dropped:
                return total
            if self._metrics is not None:
                self._metrics.dropped(dropped)
            for name, n in dropped.items():
                total[name] = total.get(name, 0) + n
                logger.warning(
                    "dropped the %d oldest pending deliveries of %s: its backlog was over RELAY_MAX_BACKLOG (%d)",
                    n,
                    name,
                    self._max_backlog,
                    extra={"action": "backlog_dropped", "subscriber": name},
                )

    async def make_room(self) -> dict[str, int]:
        """Set `at_bound` from the size, and while over the soft mark shed the raw window's oldest rows (a bounded
        number of batches, measuring again after each). Rows removed, by kind."""
        if self._max_db_size is None:
            return {}
        shed: dict[str, int] = {}
        used = await anyio.to_thread.run_sync(self._store.used_bytes)
        self.at_bound = used >= self._max_db_size
        for _ in range(SHED_BATCHES):
            if used < SOFT_MARK * self._max_db_size:
                break
            now = self._clock()
            counts = await self._store.prune(Cutoffs(raw=now, jobs=None), SHED_ROWS, now, RECLAIM)
            if self._metrics is not None:
                self._metrics.pruned(counts)
            for kind, n in counts.items():
                shed[kind] = shed.get(kind, 0) + n
            used = await anyio.to_thread.run_sync(self._store.used_bytes)
            self.at_bound = used >= self._max_db_size
            if not any(counts.values()):
                break
        if any(shed.values()):
            logger.warning(
                "database over %d%% of RELAY_MAX_DB_SIZE: shed %s",
                SOFT_MARK * 100,
                ", ".join(f"{n} {kind}" for kind, n in shed.items() if n),
                extra={"action": "shed"},
            )
        return shed

    async def run(self) -> None:
        """Check the size every ``interval`` seconds and the backlogs every `BACKLOG_EVERY` checks, until
        cancelled; a failure is logged and tried again at the next check."""
        checks = 0
        while True:
            try:
                await self.make_room()
                if checks % BACKLOG_EVERY == 0:
                    await self.bound_backlogs()
            except StoreError as error:
                logger.error("shedding failed: %s", error, extra={"action": "shed_failed"})
            except Exception:
                logger.exception("shedding failed", extra={"action": "shed_failed"})
            checks += 1
            await anyio.sleep(self._interval)
