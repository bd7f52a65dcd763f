"""Retries follow the schedule, Retry-After stretches it, and a delivery out of retries is dead.

The worker is stepped by hand at a fake clock (`outbox` in tests/conftest.py): no server, no sleeping.
The gateway's schedule here is 10 s, 60 s, 300 s.
"""

from __future__ import annotations

from email.utils import formatdate

import pytest

from relay.domain.delivery import Outcome
from tests.conftest import Outbox, job_body
from tests.fakes import Reply, Request

pytestmark = pytest.mark.anyio


async def test_a_failed_delivery_is_retried_when_its_schedule_says_and_not_before(outbox: Outbox) -> None:
    outbox.add("hook", "/fail")
    await outbox.ingest(job_body(1))
    assert await outbox.step() == 1
    [delivery] = outbox.deliveries()
    assert (delivery["state"], delivery["failures"]) == ("pending", 1)

    assert await outbox.after(9.9) == 0  # not due yet
    assert await outbox.after(0.1) == 1  # 10 s after the first attempt
    assert await outbox.after(59.9) == 0
    assert await outbox.after(0.1) == 1  # then 60 s
    assert len(outbox.sender.to("/fail")) == 3
    assert outbox.deliveries()[0]["failures"] == 3


async def test_a_delivery_out_of_retries_is_dead_and_never_attempted_again(outbox: Outbox) -> None:
    outbox.add("hook", "/fail")
    await outbox.ingest(job_body(1))
    await outbox.step()
    for delay in (10, 60, 300):
        assert await outbox.after(delay) == 1
    assert outbox.states() == ["dead"]
    assert outbox.metric("relay_deliveries_given_up_total", subscriber="hook", reason="retries_exhausted") == 1
    assert await outbox.after(7 * 24 * 3600) == 0
    assert len(outbox.sender.requests) == 4  # the first attempt and three retries


async def test_a_subscriber_schedule_replaces_the_gateway_schedule(outbox: Outbox) -> None:
    outbox.add("hook", "/fail", retry_schedule=[1])
    await outbox.ingest(job_body(1))
    await outbox.step()
    assert await outbox.after(1) == 1
    assert outbox.states() == ["dead"]


async def test_a_success_after_failures_delivers_and_stops_retrying(outbox: Outbox) -> None:
    answers = iter([Reply(500), Reply(502), Reply(204)])
    outbox.sender.handler = lambda request: next(answers)
    outbox.add("hook", "/flaky")
    await outbox.ingest(job_body(1))
    await outbox.step()
    await outbox.after(10)
    await outbox.after(60)
    [delivery] = outbox.deliveries()
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == ("delivered", 3, 204)
    assert await outbox.after(3600) == 0


@pytest.mark.parametrize("path", ["/throttle/120", "/unavailable/120"])
async def test_retry_after_on_429_and_503_puts_the_retry_off_until_it_has_passed(outbox: Outbox, path: str) -> None:
    outbox.add("hook", path)
    await outbox.ingest(job_body(1))
    await outbox.step()
    assert await outbox.after(10) == 0  # the schedule alone would retry now
    assert await outbox.after(109.9) == 0
    assert await outbox.after(0.1) == 1  # 120 s, as asked
    outcome = Outcome.HTTP_429 if path.startswith("/throttle") else Outcome.HTTP_5XX
    assert outbox.deliveries()[0]["last_outcome"] == outcome.value


async def test_retry_after_shorter_than_the_schedule_never_speeds_the_retry_up(outbox: Outbox) -> None:
    outbox.add("hook", "/throttle/1")
    await outbox.ingest(job_body(1))
    await outbox.step()
    assert await outbox.after(5) == 0
    assert await outbox.after(5) == 1


async def test_retry_after_as_an_http_date_counts_from_the_clock(outbox: Outbox) -> None:
    def throttled(request: Request) -> Reply:
        assert request.at is not None
        in_five_minutes = request.at.timestamp() + 300
        return Reply(429, {"Retry-After": formatdate(in_five_minutes, usegmt=True)})

    outbox.sender.handler = throttled
    outbox.add("hook", "/throttle")
    await outbox.ingest(job_body(1))
    await outbox.step()
    assert await outbox.after(299) == 0
    assert await outbox.after(1) == 1


@pytest.mark.parametrize(
    ("path", "outcome", "error"),
    [
        ("/hang", Outcome.TIMEOUT, "timeout after 2s"),
        ("/refused", Outcome.CONNECTION_ERROR, "ConnectionRefusedError"),
        ("/redirect", Outcome.HTTP_3XX, None),
        ("/missing", Outcome.HTTP_4XX, None),
    ],
)
async def test_timeouts_connection_errors_redirects_and_4xx_are_retried(
    outbox: Outbox, path: str, outcome: Outcome, error: str | None
) -> None:
    outbox.add("hook", path, timeout=2)
    await outbox.ingest(job_body(1))
    await outbox.step()
    [delivery] = outbox.deliveries()
    assert (delivery["state"], delivery["last_outcome"]) == ("pending", outcome.value)
    assert delivery["id"] is not None  # its failure made it a row
    [attempt] = outbox.store.get_delivery(delivery["id"])["attempts_log"]  # type: ignore[index]
    assert attempt["error"] == error
    assert await outbox.after(10) == 1


async def test_every_attempt_is_counted_by_outcome_in_the_registry_given(outbox: Outbox) -> None:
    outbox.add("hook", "/fail")
    outbox.add("ok", "/ok")
    await outbox.ingest(job_body(1))
    await outbox.step()
    assert outbox.metric("relay_delivery_attempts_total", subscriber="hook", outcome="http_5xx") == 1
    assert outbox.metric("relay_delivery_attempts_total", subscriber="ok", outcome="success") == 1
