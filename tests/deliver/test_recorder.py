"""The recorder: attempts committed a batch at a time, each lane told its own result, none dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import cast

import pytest

from relay.deliver.recorder import Recorder
from relay.domain.delivery import Attempt, Claim, Decision, Finished, Outcome, Recorded
from relay.store import Store
from tests.fakes import EPOCH, settle

MARGIN = timedelta(seconds=5)


def finished(delivery_id: int) -> Finished:
    claim = Claim(delivery_id, f"e{delivery_id}", b"{}", 1, "hook", "http://x/", ("s",), 5.0, None, 0, "first", EPOCH)
    attempt = Attempt(Outcome.SUCCESS, 204, 0.01, None, b"", None)
    return Finished(claim, attempt, Decision("delivered"), EPOCH, EPOCH)


class GatedStore:
    """`finish` waits for the test to open the gate; every batch it was given is kept."""

    def __init__(self, error: Exception | None = None) -> None:
        self.batches: list[list[int | None]] = []
        self.gate = asyncio.Event()
        self.error = error

    async def finish(self, batch: Sequence[Finished], lease_margin: timedelta, run: int = 1) -> list[Recorded]:
        self.batches.append([item.claim.delivery_id for item in batch])
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return [Recorded(None) for _ in batch]


def recorder_over(store: GatedStore) -> Recorder:
    return Recorder(cast(Store, store), MARGIN)


@pytest.mark.anyio
async def test_attempts_finishing_while_a_batch_commits_go_together_in_the_next_one() -> None:
    store = GatedStore()
    recorder = recorder_over(store)
    first = asyncio.create_task(recorder.record(finished(1)))
    await settle(lambda: store.batches == [[1]], what="the first batch")
    later = [asyncio.create_task(recorder.record(finished(number))) for number in (2, 3, 4)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(first, *later)
    assert store.batches == [[1], [2, 3, 4]]
    assert all(result.disabled is None for result in results)


@pytest.mark.anyio
async def test_a_lane_cancelled_while_its_batch_commits_leaves_its_attempt_recorded_and_the_others_answered() -> None:
    store = GatedStore()
    recorder = recorder_over(store)
    lanes = [asyncio.create_task(recorder.record(finished(number))) for number in (1, 2)]
    await settle(lambda: store.batches == [[1, 2]], what="the batch")
    lanes[0].cancel()
    store.gate.set()
    assert (await lanes[1]).disabled is None
    assert lanes[0].cancelled()
    await recorder.idle()
    assert store.batches == [[1, 2]]  # the cancelled lane's attempt was in the batch that committed


@pytest.mark.anyio
async def test_a_failed_commit_reaches_every_lane_of_its_batch_and_the_next_batch_still_commits() -> None:
    store = GatedStore(error=RuntimeError("disk full"))
    recorder = recorder_over(store)
    lanes = [asyncio.create_task(recorder.record(finished(number))) for number in (1, 2)]
    await settle(lambda: len(store.batches) == 1, what="the first batch")
    late = asyncio.create_task(recorder.record(finished(3)))
    await asyncio.sleep(0)
    store.gate.set()
    outcomes = await asyncio.gather(*lanes, late, return_exceptions=True)
    assert [str(outcome) for outcome in outcomes] == ["disk full"] * 3
    assert store.batches == [[1, 2], [3]]


@pytest.mark.anyio
async def test_idle_returns_once_every_attempt_handed_over_is_committed() -> None:
    store = GatedStore()
    recorder = recorder_over(store)
    lane = asyncio.create_task(recorder.record(finished(1)))
    await settle(lambda: store.batches == [[1]], what="the first batch")
    waiting = asyncio.create_task(recorder.idle())
    for _ in range(10):  # let it run as far as it can
        await asyncio.sleep(0)
    assert not waiting.done()
    store.gate.set()
    await waiting
    assert lane.done()
    await recorder.idle()  # nothing left: returns at once


@pytest.mark.anyio
async def test_an_attempt_handed_over_without_waiting_commits_before_or_with_the_one_its_lane_waits_for() -> None:
    store = GatedStore()
    recorder = recorder_over(store)
    recorder.submit(finished(1))  # a run's success with more to send: the lane goes on at once
    await settle(lambda: store.batches == [[1]], what="the first batch")
    recorder.submit(finished(2))
    last = asyncio.create_task(recorder.record(finished(3)))
    await asyncio.sleep(0)
    store.gate.set()
    assert (await last).disabled is None
    assert store.batches == [[1], [2, 3]]


@pytest.mark.anyio
async def test_a_failed_commit_of_attempts_nobody_waits_for_is_not_an_unretrieved_error() -> None:
    store = GatedStore(error=RuntimeError("disk full"))
    recorder = recorder_over(store)
    recorder.submit(finished(1))
    store.gate.set()
    await recorder.idle()  # their leases expire and the events are sent again: at least once
    assert store.batches == [[1]]
