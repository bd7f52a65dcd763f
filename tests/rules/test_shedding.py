"""The shedder's rules at the store, with a fake clock and a fresh registry (`outbox` in tests/conftest.py): a
backlog past its bound loses its oldest pending deliveries to ``dropped``, counted per subscriber; one within
it, and what is in flight, are left alone; a size bound is reported reached only once the store is over it."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from relay.maintenance.shedding import Shedder
from relay.metrics.counters import Metrics
from tests.conftest import Outbox, job_body

pytestmark = pytest.mark.anyio

GIVEN_UP = "relay_deliveries_given_up_total"


async def test_only_the_oldest_pending_deliveries_past_the_bound_are_dropped_and_each_is_counted(
    outbox: Outbox,
) -> None:
    outbox.add("held", "/ok")
    outbox.add("within", "/ok", types=["cos.job.failed"])
    outbox.subscribers.pause("held")
    outbox.subscribers.pause("within")
    await outbox.ingest(*(job_body(number) for number in range(8)), job_body(8, "Failed"), job_body(9, "Failed"))
    registry = CollectorRegistry()
    shedder = Shedder(outbox.store, 3, outbox.clock, metrics=Metrics(registry))

    assert await shedder.bound_backlogs() == {"held": 7}
    states = [d["state"] for d in outbox.deliveries(subscriber="held")]
    assert states == ["dropped"] * 7 + ["pending"] * 3
    assert [d["state"] for d in outbox.deliveries(subscriber="within")] == ["pending"] * 2
    assert registry.get_sample_value(GIVEN_UP, {"subscriber": "held", "reason": "backlog_full"}) == 7
    assert await shedder.bound_backlogs() == {}  # within the bound now: nothing more goes


async def test_a_size_bound_is_reached_only_when_the_store_is_over_it(outbox: Outbox) -> None:
    used = outbox.store.used_bytes()
    over = Shedder(outbox.store, 100, outbox.clock, max_db_size=used)
    under = Shedder(outbox.store, 100, outbox.clock, max_db_size=10 * used)
    await over.make_room()
    await under.make_room()
    assert await over.at_bound()
    assert not await under.at_bound()


async def test_a_flood_between_two_measurements_is_measured_before_it_can_pass_the_bound(outbox: Outbox) -> None:
    used = outbox.store.used_bytes()
    tight = Shedder(outbox.store, 100, outbox.clock, max_db_size=used + 64 * 1024)
    roomy = Shedder(outbox.store, 100, outbox.clock, max_db_size=10 * used)
    await tight.make_room()
    await roomy.make_room()
    await outbox.ingest(*(job_body(number) for number in range(100)))
    assert outbox.store.used_bytes() > used + 64 * 1024
    assert not await tight.at_bound()  # as last measured, though the store grew: no measurement per callback
    # What was accepted since could have reached the bound: the next callback measures again.
    tight.accepted(64 * 1024)
    assert await tight.at_bound()
    roomy.accepted(3 * used)
    assert not await roomy.at_bound()  # measured: it had not, after all
