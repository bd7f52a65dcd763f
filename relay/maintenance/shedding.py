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
from relay.metrics.counters import Metrics
from relay.store import Store
from relay.store.failures import StoreError

logger = logging.getLogger(__name__)

#: How often the size is checked (a stat and a page count); a flood between checks is measured sooner (`at_bound`).
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
#: What an accepted callback is taken to add to the database, per byte of its body (its raw copy, job rows, event
#: and deliveries, with their indexes): once what was accepted since the last measurement could have reached the
#: bound, the next callback measures again before it is let in, so a flood between two checks cannot carry the
#: database past the bound.
GROWTH_PER_BODY_BYTE = 4


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
        #: The size last measured, and what accepted callbacks are taken to have added since.
        self._measured = 0
        self._grown = 0
        self._measuring = anyio.Lock()
        self._clock = clock
        self._metrics = metrics
        self._interval = interval
        self._batch = batch

    async def at_bound(self) -> bool:
        """The database is at its size bound: callbacks are refused (503). As last measured, unless what was
        accepted since could have reached it: then measured now, once for all callbacks waiting."""
        bound = self._max_db_size
        if bound is None or self._measured >= bound:
            return bound is not None
        if self._measured + self._grown >= bound:
            async with self._measuring:
                if self._measured + self._grown >= bound:
                    await self._measure()
        return self._measured >= bound

    def accepted(self, body_bytes: int) -> None:
        """A callback of ``body_bytes`` was committed: count it toward the size until the next measurement."""
        self._grown += GROWTH_PER_BODY_BYTE * body_bytes

    async def _measure(self) -> int:
        self._measured = await anyio.to_thread.run_sync(self._store.used_bytes)
        self._grown = 0
        return self._measured

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
        """Measure the size (for `at_bound`), and while over the soft mark shed the raw window's oldest rows (a bounded
        number of batches, measuring again after each). Rows removed, by kind."""
        if self._max_db_size is None:
            return {}
        shed: dict[str, int] = {}
        used = await self._measure()
        for _ in range(SHED_BATCHES):
            if used < SOFT_MARK * self._max_db_size:
                break
            now = self._clock()
            counts = await self._store.prune(Cutoffs(raw=now, jobs=None), SHED_ROWS, now, RECLAIM)
            if self._metrics is not None:
                self._metrics.pruned(counts)
            for kind, n in counts.items():
                shed[kind] = shed.get(kind, 0) + n
            used = await self._measure()
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
