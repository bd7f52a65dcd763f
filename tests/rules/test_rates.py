"""A subscriber's rate, held by the claim: stepped at a fake clock, on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from relay.domain.destinations import parse_rate
from tests.conftest import Outbox, job_body

pytestmark = pytest.mark.anyio


async def test_a_rate_starts_one_delivery_per_interval_and_holds_the_rest_pending(outbox: Outbox) -> None:
    outbox.add("paced", "/ok", rate=parse_rate("2/s"))
    await outbox.ingest(*(job_body(number) for number in range(5)))
    assert await outbox.step() == 1
    assert await outbox.after(0.4) == 0
    assert await outbox.after(0.1) == 1
    assert outbox.states() == ["delivered", "delivered", "pending", "pending", "pending"]


async def test_the_worker_is_due_again_when_the_rate_allows_the_next_start(outbox: Outbox) -> None:
    outbox.add("paced", "/ok", rate=parse_rate("6/m"))
    await outbox.ingest(job_body(1), job_body(2))
    started = outbox.clock()
    await outbox.step()
    assert await outbox.store.next_due() == started + timedelta(seconds=10)


async def test_a_rate_counts_the_lanes_that_take_the_next_delivery_too(outbox: Outbox) -> None:
    # Each finished attempt claims its subscriber's next delivery for the same lane: that claim is paced too.
    outbox.add("paced", "/ok", rate=parse_rate("100/s"), max_in_flight=64)
    await outbox.ingest(*(job_body(number) for number in range(40)))
    await outbox.step()
    assert outbox.states().count("delivered") == 10  # the burst: a tenth of a second's worth
    await outbox.after(0.1)
    assert outbox.states().count("delivered") == 20


async def test_a_subscriber_without_a_rate_is_not_held_by_another_ones(outbox: Outbox) -> None:
    outbox.add("paced", "/ok/paced", rate=parse_rate("1/m"))
    outbox.add("free", "/ok/free")
    await outbox.ingest(*(job_body(number) for number in range(3)))
    await outbox.step()
    assert len(outbox.sender.to("/ok/free")) == 3
    assert len(outbox.sender.to("/ok/paced")) == 1


async def test_changing_the_rate_applies_to_the_next_claim(outbox: Outbox) -> None:
    outbox.add("paced", "/ok", rate=parse_rate("1/m"))
    await outbox.ingest(*(job_body(number) for number in range(3)))
    await outbox.step()
    outbox.subscribers.update("paced", {"rate": None})
    assert await outbox.step() == 2
