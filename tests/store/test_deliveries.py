"""Deliveries and their leases, the same on both backends: claimed when due (never twice, never past a
subscriber's in-flight limit, never a paused one's), given back unattempted, requeued by an operator."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec, SubscriberState
from relay.store import store_for
from relay.store.records import Target
from tests.conftest import job_body, record


def test_a_claim_takes_what_is_due_up_to_the_in_flight_limit_and_never_from_a_paused_subscriber(
    database: Target,
) -> None:
    at = utc_now()
    with store_for(database) as store:
        limited = SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter(), max_in_flight=2)
        store.add_subscriber(limited, at)
        store.add_subscriber(SubscriberSpec("held", "http://127.0.0.1:9/held", generate_secret(), Filter()), at)
        store.set_subscriber_state("held", SubscriberState.PAUSED, at)
        asyncio.run(record(store, *(job_body(number) for number in range(5)), at=at))

        async def claims() -> tuple[list[str], list[str]]:
            first = await store.claim(at, LEASE_MARGIN, 10)
            second = await store.claim(at, LEASE_MARGIN, 10)
            return [claim.subscriber for claim in first], [claim.subscriber for claim in second]

        first, second = asyncio.run(claims())
        assert first == ["hook", "hook"]
        assert second == []  # the two leased are in flight: the limit is reached
        assert store.count_deliveries("in_flight") == 2
        assert store.count_deliveries("pending") == 8


def test_a_released_claim_is_due_again_at_once_and_counts_no_attempt(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter()), at)
        asyncio.run(record(store, job_body(1), at=at))

        async def release_and_claim_again() -> tuple[tuple[int, str], tuple[int, str]]:
            [claim] = await store.claim(at, LEASE_MARGIN, 1)
            await store.release(claim, at)
            assert await store.next_due() is not None
            [again] = await store.claim(at, LEASE_MARGIN, 1)
            return (claim.subscriber_id, claim.event_id), (again.subscriber_id, again.event_id)

        # A first attempt from the event log: no row id, the delivery is known by subscriber and event.
        first, again = asyncio.run(release_and_claim_again())
        assert first == again
        delivery = store.delivery_of(*first)
        assert delivery is not None
        assert delivery["attempts"] == 1  # the released lease gave its attempt back


def test_nothing_is_due_when_nothing_is_owed_and_a_requeued_delivery_is_due_now(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        assert asyncio.run(store.next_due()) is None
        subscriber = store.add_subscriber(
            SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter()), at
        )
        asyncio.run(record(store, job_body(1), job_body(2), at=at))
        # Pending in the event log (no row): each gets its row to be requeued.
        owed = store.list_deliveries().items
        ids = [store.materialise(delivery["subscriber_id"], delivery["event_id"], at) for delivery in owed]
        assert None not in ids
        assert sorted(store.recoverable(subscriber.id, at - timedelta(hours=1), 0, 10)) == []  # none dead
        assert store.requeue([i for i in ids if i is not None], at + timedelta(seconds=1)) == 2
        due = asyncio.run(store.next_due())
        assert due is not None
        assert due <= at + timedelta(seconds=1)
