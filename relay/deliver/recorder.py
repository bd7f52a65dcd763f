"""Recording finished attempts in batches: while one batch commits, the next one gathers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from relay.domain.delivery import Finished, Recorded
from relay.store import Store

_Pending = list[tuple[Finished, "asyncio.Future[Recorded] | None"]]


class Recorder:
    """A lane awaits the commit of its run's last attempt (which leases it the next run) and hands the others over
    without waiting; a busy worker pays for one write per batch, not one per attempt.

    One task commits while attempts wait, a batch at a time, each batch everything that arrived while
    the one before committed; it hands the next batch to the store in the same step that wakes the
    lanes of the last one, so the writer never waits for the loop to come round. No lane leads, so a
    cancelled lane cannot stop a batch that others wait on (its own attempt is recorded all the same).
    Plain asyncio futures: in a profile of a delivery drain, anyio's events and shielded scopes here
    cost the delivery loop more than the bookkeeping they guarded.
    """

    def __init__(self, store: Store, lease_margin: timedelta, run: int = 1) -> None:
        self._store = store
        self._lease_margin = lease_margin
        self._run = run
        self._pending: _Pending = []
        self._committing: asyncio.Task[None] | None = None

    async def record(self, finished: Finished) -> Recorded:
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._add(finished, future)
        return await future

    def submit(self, finished: Finished) -> None:
        """Record an attempt that is not the last of its run, without waiting: batches commit in order, so the run's
        last record, which its lane awaits, commits with it or after it. Should its batch fail, the events' lease
        expires and they are sent again (at least once)."""
        self._add(finished, None)

    def _add(self, finished: Finished, future: asyncio.Future[Recorded] | None) -> None:
        self._pending.append((finished, future))
        if self._committing is None:
            self._committing = asyncio.get_running_loop().create_task(self._commit_all())

    async def idle(self) -> None:
        """Until every attempt handed to `record` so far is committed (or its commit failed)."""
        if (committing := self._committing) is not None:
            await asyncio.wait([committing])

    async def _commit_all(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._commit(batch)
        finally:
            self._committing = None

    async def _commit(self, batch: _Pending) -> None:
        try:
            results = await self._store.finish([finished for finished, _ in batch], self._lease_margin, self._run)
        except asyncio.CancelledError:  # only when the loop closes: nobody is left to record for
            for _, future in (*batch, *self._pending):
                if future is not None:
                    future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                # Not done: its lane was cancelled meanwhile; the attempt is recorded all the same.
                if future is not None and not future.done():
                    future.set_result(result)
