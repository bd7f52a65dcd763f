"""The pruner: applies the retention windows in small batches (SQLite: through the single writer;
PostgreSQL: one replica at a time), in the background (started by the app factory) or once on demand
(`cos-relay prune`).

Each batch is one write among the callbacks' writes: ingest waits at most one batch. After each batch the
pruner rests twice as long as the batch took, so it holds at most about a third of the writer's time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

import anyio

from relay.domain.retention import Cutoffs, Pruned, Windows
from relay.metrics.counters import Metrics
from relay.store import Store
from relay.store.failures import StoreError

logger = logging.getLogger(__name__)

#: Rows of each kind per batch: a few ms of writing (`python -m bench.retention`, docs/benchmarks.md).
BATCH = 100
#: Free pages given back per batch (4 KiB each): about what a batch of real callbacks frees.
RECLAIM = 512
#: Rest after a batch, in multiples of the batch's own time.
REST = 2.0
#: The shortest rest between batches, so queued callbacks always get the writer in between.
MIN_REST = 0.005


class Pruner:
    def __init__(
        self,
        store: Store,
        windows: Windows,
        clock: Callable[[], datetime],
        *,
        interval: float = 3600.0,
        metrics: Metrics | None = None,
        batch: int = BATCH,
        reclaim: int = RECLAIM,
    ) -> None:
        self._store = store
        self._windows = windows
        self._clock = clock
        self._interval = interval
        self._metrics = metrics
        self._batch = batch
        self._reclaim = reclaim
        self._wake = anyio.Event()

    async def prune(self, cutoffs: Cutoffs | None = None) -> Pruned:
        """Prune to ``cutoffs`` (the windows' as of now by default) until nothing is left; what was removed."""
        cutoffs = cutoffs or self._windows.cutoffs(self._clock())
        pruned = Pruned()
        while True:
            started = time.perf_counter()
            counts = await self._store.prune(cutoffs, self._batch, self._clock(), self._reclaim)
            pruned.add(counts)
            if self._metrics is not None:
                self._metrics.pruned(counts)
            if not any(counts.values()):
                return pruned
            await anyio.sleep(max(MIN_REST, REST * (time.perf_counter() - started)))

    async def run(self) -> None:
        """Prune now, then every ``interval`` seconds, until cancelled. A failed prune is logged and tried again
        at the next interval (the last-prune gauge stops moving, which the alert watches)."""
        while True:
            try:
                pruned = await self.prune()
            except StoreError as error:  # locked, full, read-only, unreachable: one line, tried again next interval
                logger.error("prune failed: %s", error, extra={"action": "prune_failed"})
            except Exception:
                logger.exception("prune failed", extra={"action": "prune_failed"})
            else:
                if pruned.total:
                    logger.info(
                        "pruned %s",
                        ", ".join(f"{n} {kind}" for kind, n in pruned.counts.items() if n),
                        extra={"action": "pruned"},
                    )
            with anyio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = anyio.Event()

    def wake(self) -> None:
        """Prune again now (tests; an operator's signal could call it)."""
        self._wake.set()
