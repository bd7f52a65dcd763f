"""The store's methods, written once over the operations in `relay.store.ops`.

`SqliteStore` and `PostgresStore` differ in how an operation reaches a connection (the writer thread and
reader connections; the asyncpg pool), in opening, closing and watching, and in what only one of them can do
(file sizes, backups); each supplies the four ways to run an operation and inherits the rest from here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from relay.domain.delivery import Claim, Finished, Recorded
from relay.store.db import Operation
from relay.store.ops import attempts, deliveries
from relay.store.sealing import Sealer

T = TypeVar("T")


class SqlStore(ABC):
    """What `relay.store.interface.Store` asks, for both backends."""

    #: Seals secrets on the way in, opens them on the way out (no key: clear).
    _sealer: Sealer

    @abstractmethod
    async def _write(self, operation: Operation[T], *, urgent: bool = False) -> T:
        """``operation`` in a transaction, committed when this returns (``urgent``: the delivery worker's,
        ahead of ordinary writes where they queue)."""

    @abstractmethod
    async def _read(self, operation: Operation[T]) -> T: ...

    @abstractmethod
    def _write_sync(self, operation: Operation[T]) -> T: ...

    @abstractmethod
    def _read_sync(self, operation: Operation[T]) -> T: ...

    # -- deliveries (sync: the CLI and the API through a thread) -----------------------------------

    def requeue(self, delivery_ids: Iterable[int], at: datetime) -> int:
        return self._write_sync(partial(deliveries.requeue, delivery_ids=list(delivery_ids), at=at))

    def recoverable(self, subscriber_id: int, since: datetime, after_id: int, limit: int) -> list[int]:
        return self._read_sync(
            partial(deliveries.recoverable, subscriber_id=subscriber_id, since=since, after_id=after_id, limit=limit)
        )

    # -- the delivery worker ----------------------------------------------------------------------

    async def claim(self, now: datetime, lease_margin: timedelta, capacity: int) -> list[Claim]:
        claims = await self._write(
            partial(deliveries.claim_due, now=now, lease_margin=lease_margin, capacity=capacity), urgent=True
        )
        return [self._sealer.claim(claim) for claim in claims]

    async def finish(self, finished: Sequence[Finished], lease_margin: timedelta) -> list[Recorded]:
        """Record attempts (one transaction); for each, why it disabled its subscriber and the next claim."""
        recorded = await self._write(
            partial(attempts.finish, finished=finished, lease_margin=lease_margin), urgent=True
        )
        return [self._sealer.recorded(each) for each in recorded]

    async def release(self, claim: Claim, at: datetime) -> None:
        await self._write(partial(deliveries.release, claim=claim, at=at), urgent=True)

    async def next_due(self) -> datetime | None:
        return await self._read(deliveries.next_due)
