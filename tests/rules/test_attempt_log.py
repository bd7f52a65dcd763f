"""What the worker logs per attempt: a success at debug only, every failure at info, a dead delivery as a warning."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import Outbox, job_body

pytestmark = pytest.mark.anyio

WORKER = "relay.deliver.worker"


def attempt_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The one record per attempt (warnings about the delivery or its subscriber carry the same fields)."""
    return [
        r for r in caplog.records if getattr(r, "action", None) == "delivery_attempt" and r.levelno < logging.WARNING
    ]


async def test_a_success_is_logged_at_debug_when_debug_is_on_and_not_at_all_otherwise(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.add("hook", "/ok")
    await outbox.ingest(job_body(1))
    with caplog.at_level(logging.INFO, logger=WORKER):
        assert await outbox.step() == 1
    assert attempt_records(caplog) == []
    await outbox.ingest(job_body(2))
    with caplog.at_level(logging.DEBUG, logger=WORKER):
        assert await outbox.step() == 1
    [record] = attempt_records(caplog)
    assert record.levelno == logging.DEBUG
    assert (record.__dict__["outcome"], record.__dict__["subscriber"]) == ("success", "hook")


async def test_a_failure_is_logged_at_info_and_a_dead_delivery_as_a_warning(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.add("hook", "/fail", retry_schedule=[1])
    await outbox.ingest(job_body(1))
    with caplog.at_level(logging.INFO, logger=WORKER):
        assert await outbox.step() == 1
        assert await outbox.after(1) == 1  # the one retry, the last
    first, last = attempt_records(caplog)
    assert (first.levelno, last.levelno) == (logging.INFO, logging.INFO)
    assert first.__dict__["outcome"] == "http_5xx"
    assert any(record.levelno == logging.WARNING and "is dead" in record.getMessage() for record in caplog.records)
