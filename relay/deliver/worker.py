"""The delivery worker: claims due deliveries, sends them, records every attempt and decides what next."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio

from relay.deliver.destinations import Destinations
from relay.deliver.recorder import Recorder
from relay.domain.delivery import GONE_OUTCOMES, Attempt, Claim, Decision, Finished, decide, runs
from relay.domain.retry import RetryPolicy
from relay.metrics.counters import Metrics
from relay.store import Store

logger = logging.getLogger(__name__)

#: A lease outlives the subscriber's timeout by this much, so a slow commit never looks like a crash.
LEASE_MARGIN = timedelta(seconds=5)
#: Events a lane takes under one lease and sends one after another, recording all but the last without waiting:
#: the claim and the wait for its commit are paid once a run (docs/performance.md, "lanes in runs").
RUN = 8


class DeliveryWorker:
    """Runs until cancelled; one slow or dead subscriber never holds up another (per-subscriber limits)."""

    def __init__(
        self,
        store: Store,
        destinations: Destinations,
        policy: RetryPolicy,
        clock: Callable[[], datetime],
        *,
        capacity: int = 256,
        poll_interval: float = 1.0,
        disable_after: timedelta = timedelta(days=5),
        rand: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
        run: int = RUN,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._destinations = destinations
        self._policy = policy
        self._clock = clock
        self._capacity = capacity
        self._poll_interval = poll_interval
        self._disable_after = disable_after
        self._rand = rand
        self._run = run
        self._recorder = Recorder(store, LEASE_MARGIN, run)
        self._wake = anyio.Event()
        self._in_flight = 0
        #: Whether a claim of a rate-limited subscriber was seen (from then on, every sleep asks when work is due).
        self._paced = False
        self._stopping = False
        self._idle = anyio.Event()

    def wake(self) -> None:
        """New deliveries were committed, or a subscriber changed: look for work now."""
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stop claiming, and give attempts in flight up to ``grace`` seconds to finish and be recorded.

        Whatever is still in flight after that keeps its lease and is retried after a restart.
        """
        self._stopping = True
        self._wake.set()
        with anyio.move_on_after(grace):
            while self._in_flight:
                self._idle = anyio.Event()
                await self._idle.wait()

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                while not self._stopping:
                    self._wake = anyio.Event()
                    claims = await self._claim()
                    self._paced = self._paced or any(claim.route.rate for claim in claims)
                    for lane in runs(claims):
                        self._in_flight += 1
                        tasks.start_soon(self._deliver, lane)
                    if claims:
                        continue  # there may be more due than one claim takes
                    await self._sleep()
        finally:
            await self._settle()

    async def _settle(self) -> None:
        """Even when cancelled: attempts already handed to the recorder are committed, not dropped."""
        with anyio.CancelScope(shield=True):
            await self._recorder.idle()

    async def _claim(self) -> list[Claim]:
        free = self._capacity - self._in_flight
        if free <= 0 or self._stopping:
            return []
        try:
            return await self._store.claim(self._clock(), LEASE_MARGIN, free, self._run)
        except Exception:  # a locked or failing database must not kill the worker: try again later
            logger.exception("claiming deliveries failed", extra={"action": "claim_failed"})
            return []

    async def _sleep(self) -> None:
        """Until woken, or the next delivery is due, or the poll interval passes (work from other processes)."""
        delay = self._poll_interval
        # With attempts in flight, the next one to finish wakes us; only an idle worker needs the due time. Unless a
        # subscriber is paced by a rate: its next start is due at a time no finish announces.
        due = None if self._in_flight and not self._paced else await self._next_due()
        if due is not None:
            until_due = (due - self._clock()).total_seconds()
            # Due already but not claimable means subscribers are at their limit: wait for a wake-up.
            if until_due > 0:
                delay = min(delay, until_due)
        with anyio.move_on_after(delay):
            await self._wake.wait()

    async def _next_due(self) -> datetime | None:
        try:
            return await self._store.next_due()
        except Exception:
            logger.exception("reading the next due time failed", extra={"action": "next_due_failed"})
            return None

    async def run_once(self) -> int:
        """Claim everything due now and deliver it, waiting for the attempts (for tests and tools); how many lanes
        it started."""
        lanes = runs(await self._claim())
        try:
            async with anyio.create_task_group() as tasks:
                for lane in lanes:
                    self._in_flight += 1
                    tasks.start_soon(self._deliver, lane)
        finally:
            await self._settle()
        return len(lanes)

    async def _deliver(self, lane: tuple[Claim, ...]) -> None:
        """Attempt a lane's run, then whatever next run of the same subscriber finishing it claimed."""
        try:
            while lane and not self._stopping:
                lane = await self._attempt_run(lane)
            if lane:  # stopping: hand the unattempted lease back rather than let it expire
                await self._store.release(lane[0], self._clock())
        except Exception:
            # The lease expires and the delivery is retried: at least once, never lost.
            logger.exception("delivery failed unexpectedly", extra={"action": "deliver_error"})
        finally:
            self._in_flight -= 1
            self._wake.set()
            self._idle.set()

    async def _attempt_run(self, lane: tuple[Claim, ...]) -> tuple[Claim, ...]:
        """Send the run's events one after another. A success with more to come is handed to the recorder without
        waiting; the lane waits for its last attempt's commit, which leases its next run. A failure ends the run
        there (the rest of its lease given back, claimed again at once): a failing subscriber gets no more attempts
        than a lane of one event each."""
        for index, claim in enumerate(lane, start=1):
            started = self._clock()
            attempt = await self._destinations.send(claim, started)
            if not claim.store_response:
                attempt = dataclasses.replace(attempt, response_body=b"")
            finished = self._clock()
            decision = decide(claim, attempt, finished, self._policy, self._disable_after, self._rand)
            more = index < len(lane)
            if more and decision.state == "delivered" and not self._stopping:
                self._recorder.submit(Finished(claim, attempt, decision, started, finished, last=False))
                self._report(claim, attempt, decision, None, finished)
                continue
            record = Finished(claim, attempt, decision, started, finished, gives_back=more)
            recorded = await self._recorder.record(record)
            self._report(claim, attempt, decision, recorded.disabled, finished)
            return recorded.following
        return ()

    def _report(
        self, claim: Claim, attempt: Attempt, decision: Decision, disabled: str | None, finished: datetime
    ) -> None:
        self._log(claim, attempt, decision, disabled)
        if self._metrics is not None:
            self._count(claim, attempt, decision, disabled, finished)

    def _count(
        self, claim: Claim, attempt: Attempt, decision: Decision, disabled: str | None, finished: datetime
    ) -> None:
        metrics = self._metrics
        assert metrics is not None
        metrics.attempt(claim.subscriber, attempt.outcome.value, attempt.duration)
        if decision.state == "delivered" and claim.trigger != "manual":
            metrics.e2e_seconds.labels(claim.subscriber).observe((finished - claim.created_at).total_seconds())
        if decision.state == "dead":
            metrics.given_up.labels(claim.subscriber, "retries_exhausted").inc()
        if disabled:
            reason = "gone" if attempt.outcome in GONE_OUTCOMES else "failing"
            metrics.disabled.labels(claim.subscriber, reason).inc()

    def _log(self, claim: Claim, attempt: Attempt, decision: Decision, disabled: str | None) -> None:
        level = logging.DEBUG if decision.state == "delivered" else logging.INFO
        if not (logger.isEnabledFor(level) or decision.state == "dead" or disabled):
            return  # the usual success, logged at a level nobody reads: skip building the record
        # A first attempt of an event of the log has no row (no id) yet: named by subscriber and event.
        name = claim.delivery_id or f"{claim.subscriber_id}:{claim.event_id}"
        fields = {
            "action": "delivery_attempt",
            "event_id": claim.event_id,
            "subscriber": claim.subscriber,
            "outcome": attempt.outcome.value,
            "delivery_id": claim.delivery_id,
        }
        # Successes at debug: the attempts table records each one; failures are what an operator reads.
        logger.log(
            level,
            "delivery %s to %s: %s (%s) -> %s",
            name,
            claim.subscriber,
            attempt.outcome.value,
            attempt.status or attempt.error,
            decision.state,
            extra=fields,
        )
        if decision.state == "dead":
            logger.warning("delivery %s is dead: retries exhausted", name, extra=fields)
        if disabled:
            logger.warning("subscriber %s disabled: %s", claim.subscriber, disabled, extra=fields)
