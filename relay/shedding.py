"""The shedder: keeps each subscriber's backlog within ``max_backlog`` pending deliveries.

A paused, disabled or failing subscriber holds every event owed to it as a pending delivery, which no prune
removes (a delivery still owed never goes). Past the bound, its oldest pending deliveries become ``dropped``:
finished, so the raw window prunes them like dead ones; counted (relay_deliveries_given_up_total with
reason ``backlog_full``), logged, listed (``GET /api/deliveries?state=dropped``) and requeued by hand like
dead ones (retry, ``subscribers recover``). Started by the app factory beside the pruner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import anyio

from relay.metrics import Metrics
from relay.store import Store
from relay.store.failures import StoreError

logger = logging.getLogger(__name__)

#: How often backlogs are checked: one pass over the pending deliveries' index, outside the writer.
INTERVAL = 5.0
#: Deliveries dropped per subscriber per batch (one short write each).
BATCH = 1000


class Shedder:
    def __init__(
        self,
        store: Store,
        max_backlog: int,
        clock: Callable[[], datetime],
        *,
        metrics: Metrics | None = None,
        interval: float = INTERVAL,
        batch: int = BATCH,
    ) -> None:
        self._store = store
        self._max_backlog = max_backlog
        self._clock = clock
        self._metrics = metrics
        self._interval = interval
        self._batch = batch

    async def shed(self) -> dict[str, int]:
        """Drop what is over the bound, a batch at a time, until every backlog is within it; how many, by
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

    async def run(self) -> None:
        """Shed now, then every ``interval`` seconds, until cancelled; a failure is logged and tried again."""
        while True:
            try:
                await self.shed()
            except StoreError as error:
                logger.error("backlog check failed: %s", error, extra={"action": "shed_failed"})
            except Exception:
                logger.exception("backlog check failed", extra={"action": "shed_failed"})
            await anyio.sleep(self._interval)
