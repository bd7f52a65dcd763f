"""Finishing attempts (`Store.finish`): batched, each with its own result, and the failure streak they set."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from relay.deliver.recorder import Recorder
from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.delivery import Attempt, Claim, Decision, Finished, Outcome, decide
from relay.domain.filters import Filter
from relay.domain.retry import RetryPolicy
from relay.domain.subscribers import SubscriberSpec
from relay.store import store_for
from relay.store.records import Target
from tests.conftest import ingest, job_body


def test_concurrent_attempts_are_recorded_in_fewer_transactions_each_with_its_own_result(database: Target) -> None:
    db = database
    lanes = 24
    with store_for(db) as store:
        spec = SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter(), max_in_flight=lanes)
        store.add_subscriber(spec, utc_now())
    ingest(db, *(job_body(number) for number in range(lanes * 2)))
    transactions: list[float] = []
    with store_for(db, observe=lambda seconds, error: transactions.append(seconds)) as store:

        async def attempt_all() -> list[tuple[int, str] | None]:
            claims = await store.claim(utc_now(), LEASE_MARGIN, lanes)
            assert len(claims) == lanes
            recorder = Recorder(store, LEASE_MARGIN)
            delivered = Attempt(Outcome.SUCCESS, 204, 0.01, None, b"", None)
            transactions.clear()
            recorded = await asyncio.gather(
                *(
                    recorder.record(Finished(claim, delivered, Decision("delivered"), utc_now(), utc_now()))
                    for claim in claims
                )
            )
            assert len(transactions) < lanes  # batched: one write carried several attempts
            return [(r.following[0].subscriber_id, r.following[0].event_id) if r.following else None for r in recorded]

        following = asyncio.run(attempt_all())
        # Each lane was handed the next delivery of the subscriber, and no two lanes the same one.
        assert None not in following
        assert len(set(following)) == lanes
        assert store.count_deliveries("delivered") == lanes
        assert store.count_deliveries("in_flight") == lanes


def test_a_failure_streak_disables_its_subscriber_unless_a_success_ended_the_streak_since_the_claim(
    database: Target,
) -> None:
    db = database
    with store_for(db) as store:
        spec = SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter(), max_in_flight=2)
        store.add_subscriber(spec, utc_now())
    ingest(db, job_body(1), job_body(2), job_body(3))
    policy, long_ago = RetryPolicy(), timedelta(days=5)
    failed = Attempt(Outcome.HTTP_5XX, 500, 0.01, None, b"", None)
    delivered = Attempt(Outcome.SUCCESS, 204, 0.01, None, b"", None)

    def finished(claim: Claim, attempt: Attempt, at: datetime) -> Finished:
        return Finished(claim, attempt, decide(claim, attempt, at, policy, long_ago, lambda: 0.5), at, at)

    with store_for(db) as store:

        async def scenario() -> tuple[str | None, str | None]:
            start = utc_now()
            first, second = await store.claim(start, LEASE_MARGIN, 2)
            [streak_begins] = await store.finish([finished(first, failed, start)], LEASE_MARGIN)
            [stale] = streak_begins.following  # leased in the same transaction: it saw the streak begin
            assert stale.failing_since is not None
            later = start + timedelta(days=6)
            # Another lane succeeds, which ends the streak; the stale claim's failure must not disable.
            await store.finish([finished(second, delivered, later)], LEASE_MARGIN)
            [not_disabled] = await store.finish([finished(stale, failed, later)], LEASE_MARGIN)
            # With no success in between, a streak as old as the limit disables.
            much_later = later + timedelta(days=6)
            [again, *_] = await store.claim(much_later, LEASE_MARGIN, 1)
            [disabled] = await store.finish([finished(again, failed, much_later)], LEASE_MARGIN)
            return not_disabled.disabled, disabled.disabled

        not_disabled, disabled = asyncio.run(scenario())
        assert not_disabled is None
        assert disabled is not None
        assert disabled.startswith("failing continuously since")
        subscriber = store.get_subscriber("hook")
        assert subscriber is not None
        assert subscriber.state == "disabled"


def test_one_batch_of_mixed_outcomes_records_every_attempt_and_the_last_outcome_sets_the_streak(
    database: Target,
) -> None:
    db = database
    with store_for(db) as store:
        spec = SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter(), max_in_flight=4)
        store.add_subscriber(spec, utc_now())
    ingest(db, *(job_body(number) for number in range(4)))
    failed = Attempt(Outcome.HTTP_5XX, 503, 0.01, "busy", b"later", 7.0)
    delivered = Attempt(Outcome.SUCCESS, 204, 0.01, None, b"", None)
    policy, never = RetryPolicy(), timedelta(days=5)

    def finished(claim: Claim, attempt: Attempt, at: datetime) -> Finished:
        return Finished(claim, attempt, decide(claim, attempt, at, policy, never, lambda: 0.5), at, at)

    with store_for(db) as store:

        async def batches() -> tuple[list[Claim], datetime | None, datetime | None]:
            at = utc_now()
            claims = await store.claim(at, LEASE_MARGIN, 4)
            first, second, third, fourth = claims
            # A success then a failure in one batch: the streak begins; a failure then a success: it ends.
            await store.finish([finished(first, delivered, at), finished(second, failed, at)], LEASE_MARGIN)
            failing = store.get_subscriber("hook")
            await store.finish([finished(third, failed, at), finished(fourth, delivered, at)], LEASE_MARGIN)
            ended = store.get_subscriber("hook")
            assert failing is not None
            assert ended is not None
            return claims, failing.failing_since, ended.failing_since

        claims, failing_since, ended = asyncio.run(batches())
        assert failing_since is not None
        assert ended is None
        states = []
        for claim in claims:  # first attempts from the event log: no row id, known by subscriber and event
            delivery = store.delivery_of(claim.subscriber_id, claim.event_id)
            assert delivery is not None
            [attempt] = delivery["attempts_log"]
            states.append((delivery["state"], attempt["outcome"], attempt["status"]))
        assert states == [
            ("delivered", "success", 204),
            ("pending", "http_5xx", 503),
            ("pending", "http_5xx", 503),
            ("delivered", "success", 204),
        ]
        retried = store.delivery_of(claims[1].subscriber_id, claims[1].event_id)
        assert retried is not None
        assert retried["attempts_log"][0]["error"] == "busy"
        assert retried["attempts_log"][0]["response_body"] == "later"
