"""What failures do to a subscriber: 410 disables it at once, failing for too long disables it,
pause holds its deliveries and resume releases them. Stepped at a fake clock, no sleeping."""

from __future__ import annotations

import pytest

from relay.domain.subscribers import SubscriberState
from relay.settings.table import Settings
from tests.conftest import Outbox, job_body

pytestmark = pytest.mark.anyio

HOUR = 3600.0


@pytest.fixture
def outbox_settings(outbox_settings: Settings) -> Settings:
    """Retries every hour for a day, and subscribers disabled after six hours of failing."""
    return outbox_settings.replace(retry_schedule=(HOUR,) * 20, disable_after=6 * HOUR)


async def test_410_gone_disables_the_subscriber_at_once_and_holds_its_deliveries(outbox: Outbox) -> None:
    outbox.add("hook", "/gone", max_in_flight=1)  # one at a time: the second would be sent after the 410
    await outbox.ingest(job_body(1), job_body(2))
    await outbox.step()
    subscriber = outbox.subscribers.get("hook")
    assert subscriber.state is SubscriberState.DISABLED
    assert subscriber.disabled_reason == "the endpoint answered 410 Gone"
    assert outbox.states() == ["pending", "pending"]  # held, not dropped
    assert outbox.metric("relay_subscribers_disabled_total", subscriber="hook", reason="gone") == 1
    assert await outbox.after(24 * HOUR) == 0
    assert len(outbox.sender.requests) == 1


async def test_a_resumed_subscriber_gets_the_deliveries_held_while_it_was_disabled(outbox: Outbox) -> None:
    outbox.add("hook", "/gone")
    await outbox.ingest(job_body(1), job_body(2))
    await outbox.step()
    outbox.subscribers.update("hook", {"url": "http://192.0.2.1/ok"})
    outbox.subscribers.resume("hook")
    await outbox.step()
    assert outbox.states() == ["delivered", "delivered"]


async def test_a_subscriber_failing_for_longer_than_disable_after_is_disabled(outbox: Outbox) -> None:
    outbox.add("hook", "/fail")
    await outbox.ingest(job_body(1))
    await outbox.step()
    for _ in range(5):
        await outbox.after(HOUR)
    assert outbox.subscribers.get("hook").state is SubscriberState.ENABLED  # five hours of failing
    await outbox.after(HOUR)  # six
    subscriber = outbox.subscribers.get("hook")
    assert subscriber.state is SubscriberState.DISABLED
    assert subscriber.disabled_reason is not None
    assert subscriber.disabled_reason.startswith("failing continuously since")
    assert outbox.metric("relay_subscribers_disabled_total", subscriber="hook", reason="failing") == 1
    assert await outbox.after(HOUR) == 0


async def test_one_success_restarts_the_failing_streak(outbox: Outbox) -> None:
    outbox.add("hook", "/fail")
    await outbox.ingest(job_body(1))
    await outbox.step()
    for _ in range(4):
        await outbox.after(HOUR)
    outbox.subscribers.update("hook", {"url": "http://192.0.2.1/ok"})
    await outbox.ingest(job_body(2))
    await outbox.step()  # job 2 delivered: the subscriber works again
    outbox.subscribers.update("hook", {"url": "http://192.0.2.1/fail"})
    for _ in range(4):
        await outbox.after(HOUR)  # job 1 keeps failing: eight hours in all, but four since the success
    assert outbox.subscribers.get("hook").state is SubscriberState.ENABLED


async def test_pause_holds_deliveries_and_resume_releases_them(outbox: Outbox) -> None:
    outbox.add("hook", "/ok")
    outbox.subscribers.pause("hook")
    await outbox.ingest(job_body(1), job_body(2))
    assert await outbox.step() == 0
    assert await outbox.after(24 * HOUR) == 0
    assert outbox.sender.requests == []
    assert outbox.states() == ["pending", "pending"]
    outbox.subscribers.resume("hook")
    await outbox.step()
    assert outbox.states() == ["delivered", "delivered"]


async def test_pausing_one_subscriber_holds_nothing_for_another(outbox: Outbox) -> None:
    outbox.add("paused", "/ok")
    outbox.add("running", "/ok")
    outbox.subscribers.pause("paused")
    await outbox.ingest(job_body(1))
    await outbox.step()
    assert {d["subscriber"]: d["state"] for d in outbox.deliveries()} == {"paused": "pending", "running": "delivered"}


async def test_a_removed_subscriber_is_never_attempted_and_its_deliveries_are_cancelled(outbox: Outbox) -> None:
    outbox.add("hook", "/fail")
    await outbox.ingest(job_body(1))
    await outbox.step()
    assert outbox.subscribers.remove("hook") == 1
    assert await outbox.after(HOUR) == 0
    assert len(outbox.sender.requests) == 1
