"""Replay: a dead or delivered delivery queued again, one at a time or in bulk, starts a fresh schedule."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import Outbox, job_body

pytestmark = pytest.mark.anyio


async def kill(outbox: Outbox, *bodies: bytes) -> None:
    """Deliveries of ``bodies`` to a failing subscriber "hook", retried until dead (schedule: 10, 60, 300)."""
    await outbox.ingest(*bodies)
    await outbox.step()
    for delay in (10, 60, 300):
        await outbox.after(delay)
    assert set(outbox.states()) == {"dead"}


async def test_retrying_a_dead_delivery_sends_it_again_now_with_a_fresh_schedule(outbox: Outbox) -> None:
    outbox.add("hook", "/fail")
    await kill(outbox, job_body(1))
    [dead] = outbox.deliveries()
    assert dead["id"] is not None  # its failures made it a row
    outbox.subscribers.retry_delivery(dead["id"])
    assert await outbox.step() == 1
    [again] = outbox.deliveries()
    assert (again["state"], again["failures"]) == ("pending", 1)
    assert await outbox.after(10) == 1  # the schedule starts over
    log = outbox.store.get_delivery(dead["id"])["attempts_log"]  # type: ignore[index]
    assert [attempt["trigger"] for attempt in log] == ["first", "retry", "retry", "retry", "manual", "retry"]


async def test_recover_queues_every_dead_delivery_since_a_time_and_the_fixed_endpoint_gets_them(
    outbox: Outbox,
) -> None:
    outbox.add("hook", "/fail")
    await kill(outbox, job_body(1), job_body(2), job_body(3))
    outbox.subscribers.update("hook", {"url": "http://192.0.2.1/ok"})
    assert outbox.subscribers.recover("hook", since=outbox.clock() - timedelta(hours=1)) == 3
    await outbox.step()
    assert outbox.states() == ["delivered"] * 3
    assert len(outbox.sender.to("/ok")) == 3


async def test_a_delivered_delivery_can_be_sent_again_on_request(outbox: Outbox) -> None:
    outbox.add("hook", "/ok")
    await outbox.ingest(job_body(1))
    await outbox.step()
    [delivered] = outbox.deliveries()
    # Delivered in order from the event log, it has no row (id null): addressed by subscriber and event, it gets one.
    assert delivered["id"] is None
    outbox.subscribers.retry_delivery_of("hook", delivered["event_id"])
    await outbox.step()
    assert outbox.states() == ["delivered"]
    first, second = outbox.sender.requests
    assert first.body == second.body  # the same event, the same id: subscribers deduplicate on it
