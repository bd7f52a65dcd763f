"""Delivery order and concurrency limits, stepped at a fake clock."""

from __future__ import annotations

import pytest

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


async def test_events_are_signed_for_the_subscriber_and_sent_as_cloudevents(outbox: Outbox) -> None:
    outbox.add("hook", "/ok")
    await outbox.ingest(job_body(1))
    await outbox.step()
    [request] = outbox.sender.requests
    assert request.event["type"] == "cos.job.succeeded"
    assert request.headers["webhook-id"] == request.event["id"]
    assert request.headers["webhook-timestamp"] == str(int(outbox.clock().timestamp()))
    assert request.headers["webhook-signature"].startswith("v1,")
