"""On PostgreSQL the delivery worker's writes are not held off by callbacks being recorded meanwhile.

A callback's transaction, until it commits, holds a key-share lock on the row of each subscriber it wrote a
delivery for (the deliveries' foreign key). Under saturated ingest one is nearly always open, so a claim that
skipped a subscriber whose row was locked at all found nothing to lease, and a finished attempt no next
delivery for its lane. Another replica's claim holds the row too: that one must still be skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.delivery import Attempt, Decision, Finished, Outcome
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.store import store_for
from relay.store.records import PostgresUrl
from tests.conftest import fresh_database, ingest, job_body
from tests.postgres import Cluster

DELIVERED = Attempt(Outcome.SUCCESS, 204, 0.01, None, b"", None)


def owing_a_subscriber(url: PostgresUrl, events: int, max_in_flight: int = 8) -> None:
    with store_for(url) as store:
        spec = SubscriberSpec(
            "hook", "http://127.0.0.1:9/hook", generate_secret(), Filter(), max_in_flight=max_in_flight
        )
        store.add_subscriber(spec, utc_now())
    ingest(url, *(job_body(number) for number in range(events)))


@contextmanager
def subscriber_row_locked(url: PostgresUrl, mode: str) -> Iterator[None]:
    """Another transaction holding the subscriber's row in ``mode`` until the block ends."""
    with psycopg.connect(url.url) as conn, conn.transaction(force_rollback=True):
        conn.execute(f"SELECT 1 FROM subscribers WHERE name = 'hook' FOR {mode}".encode())  # noqa: S608 - a fixed lock mode
        yield


def test_a_claim_leases_what_is_due_while_a_callback_for_the_subscriber_is_being_recorded(postgres: Cluster) -> None:
    url = fresh_database(postgres)
    owing_a_subscriber(url, events=3)
    with store_for(url) as store, subscriber_row_locked(url, "KEY SHARE"):
        claims = asyncio.run(store.claim(utc_now(), LEASE_MARGIN, 10))
    assert len(claims) == 3


def test_a_finished_attempt_leases_its_lane_the_next_delivery_while_a_callback_is_being_recorded(
    postgres: Cluster,
) -> None:
    url = fresh_database(postgres)
    owing_a_subscriber(url, events=2, max_in_flight=1)
    with store_for(url) as store:

        async def finish_the_first() -> tuple[str, str | None]:
            [claim] = await store.claim(utc_now(), LEASE_MARGIN, 10)
            with subscriber_row_locked(url, "KEY SHARE"):
                now = utc_now()
                [recorded] = await store.finish(
                    [Finished(claim, DELIVERED, Decision("delivered"), now, now)], LEASE_MARGIN
                )
            # Events of the log: the next one has no delivery row (no id), it is known by its event.
            return claim.event_id, recorded.following[0].event_id if recorded.following else None

        first, following = asyncio.run(finish_the_first())
    assert following is not None
    assert following != first


def test_a_subscriber_another_replica_is_claiming_for_is_skipped(postgres: Cluster) -> None:
    url = fresh_database(postgres)
    owing_a_subscriber(url, events=3)
    with store_for(url) as store, subscriber_row_locked(url, "NO KEY UPDATE"):
        claims = asyncio.run(store.claim(utc_now(), LEASE_MARGIN, 10))
    assert claims == []
