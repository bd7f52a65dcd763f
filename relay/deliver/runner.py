"""The delivery worker on its own thread and event loop, so saturated ingest cannot starve it.

On the HTTP loop, deliveries waited behind every ready request; on a loop of their own, the GIL's
forced switching gives them a share of the CPU whatever ingest does. The worker itself stays the
steppable core (tests drive it with ``run_once``); this module is only the edge that owns the thread,
its loop, and the destinations' connections (a connection belongs to the loop that made it).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future

import anyio

from relay.deliver.destinations import Destinations
from relay.deliver.worker import DeliveryWorker


class DeliveryThread:
    """Starts the destinations and the worker on a thread of their own; ``wake`` may be called from any thread."""

    def __init__(
        self, worker: DeliveryWorker, destinations: Destinations, *, grace: float, name: str = "relay-delivery"
    ) -> None:
        self._worker = worker
        self._destinations = destinations
        self._grace = grace
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started: Future[None] = Future()
        self._done: Future[None] = Future()
        # Wake-ups are coalesced: one cross-thread call covers every commit made before it runs.
        self._wake_pending = False

    def wake(self) -> None:
        """New deliveries were committed, or a subscriber changed (from the HTTP loop, or any thread)."""
        loop = self._loop
        if loop is None or self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: the worker is gone, nobody to wake
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        # Cleared before waking: a commit after this point schedules a wake-up of its own.
        self._wake_pending = False
        self._worker.wake()

    async def start(self) -> None:
        """Start the thread; returns once the destinations are open and the worker runs (or raises why not)."""
        # The same kind of loop as the server's (uvloop when uvicorn chose it): the choice is the operator's.
        uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        threading.Thread(target=self._main, args=(uvloop,), name=self._name, daemon=True).start()
        await asyncio.wrap_future(self._started)

    async def stop(self) -> None:
        """Stop claiming, let attempts in flight finish for up to the grace period, close the destinations."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # already closed: it has stopped by itself
                loop.call_soon_threadsafe(stop.set)
        await asyncio.wrap_future(self._done)

    def _main(self, uvloop: bool) -> None:
        try:
            anyio.run(self._serve, backend="asyncio", backend_options={"use_uvloop": uvloop})
        except BaseException as exc:  # told to whoever waits: start() if it never started, else stop()
            for future in (self._started, self._done):
                if not future.done():
                    future.set_exception(exc)
        else:
            if not self._done.done():
                self._done.set_result(None)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        await self._destinations.start()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._worker.run)
                self._loop = asyncio.get_running_loop()
                self._started.set_result(None)
                await self._stop.wait()
                await self._worker.stop(grace=self._grace)
                tasks.cancel_scope.cancel()
        finally:
            self._loop = None
            await self._destinations.close()
