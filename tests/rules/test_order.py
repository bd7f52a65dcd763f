"""Delivery order and concurrency limits, stepped at a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from relay.deliver.destinations import Destinations
from relay.deliver.worker import DeliveryWorker
from relay.domain.retry import RetryPolicy
from tests.conftest import Outbox, job_body, job_id
from tests.fakes import Reply, Request

pytestmark = pytest.mark.anyio


async def test_max_in_flight_1_delivers_in_order_and_a_failure_holds_the_ones_behind_it(outbox: Outbox) -> None:
    failing = {job_id(2)}

    def handler(request: Request) -> Reply:
        return Reply(500 if request.event["subject"] in failing else 204)

    outbox.sender.handler = handler
    outbox.add("ordered", "/ordered", max_in_flight=1)
    await outbox.ingest(*(job_body(number) for number in range(1, 5)))
    await outbox.step()
    assert [r.event["subject"] for r in outbox.sender.requests] == [job_id(1), job_id(2)]
    assert outbox.states() == ["delivered", "pending", "pending", "pending"]

    failing.clear()
    assert await outbox.after(9) == 0  # job 3 is due, but it waits behind job 2's retry
    await outbox.after(1)
    assert [r.event["subject"] for r in outbox.sender.requests] == [job_id(n) for n in (1, 2, 2, 3, 4)]
    assert outbox.states() == ["delivered"] * 4


async def test_without_strict_order_a_failing_delivery_holds_nothing_back(outbox: Outbox) -> None:
    def handler(request: Request) -> Reply:
        return Reply(500 if request.event["subject"] == job_id(1) else 204)

    outbox.sender.handler = handler
    outbox.add("parallel", "/parallel", max_in_flight=4)
    await outbox.ingest(*(job_body(number) for number in range(1, 4)))
    await outbox.step()
    assert outbox.states() == ["pending", "delivered", "delivered"]


async def test_a_subscriber_never_has_more_than_max_in_flight_attempts_at_once(outbox: Outbox) -> None:
    outbox.add("narrow", "/ok", max_in_flight=2)
    await outbox.ingest(*(job_body(number) for number in range(1, 7)))
    assert await outbox.step() == 2  # two lanes; each then takes the next due delivery as it finishes
    assert outbox.states() == ["delivered"] * 6


async def test_each_lane_sends_its_run_of_the_log_in_order(outbox: Outbox) -> None:
    outbox.add("runs", "/ok", max_in_flight=2)
    await outbox.ingest(*(job_body(number) for number in range(1, 9)))
    assert await outbox.step() == 2  # two lanes, four events each
    jobs = [job_id(number) for number in range(1, 9)]
    sent = [jobs.index(r.event["subject"]) for r in outbox.sender.requests]
    assert sorted(sent) == list(range(8))
    assert [n for n in sent if n < 4] == [0, 1, 2, 3]
    assert [n for n in sent if n >= 4] == [4, 5, 6, 7]
    assert outbox.states() == ["delivered"] * 8


async def test_a_failure_ends_its_lanes_run_and_the_rest_is_sent_without_waiting_for_the_retry(outbox: Outbox) -> None:
    def handler(request: Request) -> Reply:
        return Reply(500 if request.event["subject"] == job_id(2) else 204)

    outbox.sender.handler = handler
    outbox.add("runs", "/ok", max_in_flight=2)
    await outbox.ingest(*(job_body(number) for number in range(1, 9)))
    await outbox.step()
    assert outbox.states() == ["delivered", "pending", *["delivered"] * 6]
    assert sorted(r.event["subject"] for r in outbox.sender.requests) == sorted(job_id(n) for n in range(1, 9))


async def test_a_worker_stopping_mid_run_gives_the_rest_back_and_the_next_worker_sends_it_once(outbox: Outbox) -> None:
    stopping: list[asyncio.Task[None]] = []

    def handler(request: Request) -> Reply:
        if request.event["subject"] == job_id(2):  # the worker is told to stop while it sends the second
            stopping.append(asyncio.get_running_loop().create_task(outbox.worker.stop(grace=5)))
        return Reply(204)

    outbox.sender.handler = handler
    outbox.add("runs", "/ok", max_in_flight=2)
    await outbox.ingest(*(job_body(number) for number in range(1, 9)))
    await outbox.step()
    await stopping[0]
    before = len(outbox.sender.requests)
    assert before < 8  # both lanes stopped before the end of their runs
    restarted = DeliveryWorker(outbox.store, Destinations.of(outbox.sender), RetryPolicy(), outbox.clock)
    await restarted.run_once()
    assert sorted(r.event["subject"] for r in outbox.sender.requests) == sorted(job_id(n) for n in range(1, 9))
    assert outbox.states() == ["delivered"] * 8
    # What the stopping worker handed back had never been sent: each event's one attempt is its first.
    for delivery in outbox.deliveries():
        found = outbox.store.delivery_of(delivery["subscriber_id"], delivery["event_id"])
        assert found is not None
        assert [attempt["trigger"] for attempt in found["attempts_log"]] == ["first"]


async def test_events_are_signed_for_the_subscriber_and_sent_as_cloudevents(outbox: Outbox) -> None:
    outbox.add("hook", "/ok")
    await outbox.ingest(job_body(1))
    await outbox.step()
    [request] = outbox.sender.requests
    assert request.event["type"] == "cos.job.succeeded"
    assert request.headers["webhook-id"] == request.event["id"]
    assert request.headers["webhook-timestamp"] == str(int(outbox.clock().timestamp()))
    assert request.headers["webhook-signature"].startswith("v1,")
