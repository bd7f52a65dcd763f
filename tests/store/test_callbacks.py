"""The ingest service: duplicates make no events, and deliveries follow the subscribers as they are now."""

from __future__ import annotations

import asyncio

import pytest

from bench.admin_reads import bodies
from relay.deliver.signing import generate_secret
from relay.domain.callback import MAX_JOB_STATES, IngestResult, Received
from relay.domain.clock import utc_now
from relay.domain.errors import Invalid
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec, SubscriberState
from relay.ingest import Ingest, Reader
from relay.store import store_for
from relay.store.records import Target
from relay.validate.parse import new_xml_parser
from relay.validate.schema import CallbackSchema
from tests.conftest import job_body
from tests.databases import count

READER = Reader(CallbackSchema.load())


def received(body: bytes) -> Received:
    return Received(utc_now(), "127.0.0.1", "application/xml", body, "xml")


def spec(name: str) -> SubscriberSpec:
    return SubscriberSpec(name, "http://127.0.0.1:9/hook", generate_secret(), Filter())


def test_a_subscriber_added_after_a_callback_gets_the_next_ones_even_from_another_process(database: Target) -> None:
    db = database
    with store_for(db) as store, store_for(db) as other:
        ingest = Ingest(store, READER)

        async def scenario() -> list[int]:
            # The deliveries owed after each callback: the events owed through the cursors, counted by the store.
            await ingest.ingest(received(job_body(1)))  # nobody to deliver to yet
            owed = [store.count_deliveries("pending")]
            other.add_subscriber(spec("first"), utc_now())  # another process
            await ingest.ingest(received(job_body(2)))
            owed.append(store.count_deliveries("pending"))
            store.add_subscriber(spec("second"), utc_now())
            await ingest.ingest(received(job_body(3)))
            owed.append(store.count_deliveries("pending"))
            return owed

        assert asyncio.run(scenario()) == [0, 1, 3]  # the second callback owed once, the third twice


def test_a_duplicate_is_recorded_but_makes_no_event_and_no_delivery(database: Target) -> None:
    with store_for(database) as store:
        store.add_subscriber(spec("hook"), utc_now())
        ingest = Ingest(store, READER)

        async def twice() -> list[IngestResult]:
            return [(await ingest.ingest(received(job_body(1))))[1] for _ in range(2)]

        first, again = asyncio.run(twice())
        assert (first.outcome, first.events) == ("accepted", 1)
        assert (again.outcome, again.new_items, again.events) == ("duplicate", (), 0)
        assert len(store.event_bodies(limit=10)) == 1
        assert store.count_deliveries("pending") == 1


def test_a_callbacks_events_are_claimable_only_while_an_enabled_subscriber_exists(database: Target) -> None:
    """What the endpoint wakes the delivery worker on: with nobody enabled to deliver to, a wake would be a claim
    transaction per callback for nothing."""
    with store_for(database) as store:
        ingest = Ingest(store, READER)

        def one(number: int) -> IngestResult:
            return asyncio.run(ingest.ingest(received(job_body(number))))[1]

        alone = one(1)
        store.add_subscriber(spec("hook"), utc_now())
        enabled = one(2)
        store.set_subscriber_state("hook", SubscriberState.PAUSED, utc_now())
        paused = one(3)
    assert [(result.events, result.claimable) for result in (alone, enabled, paused)] == [
        (1, False),
        (1, True),
        (1, False),
    ]


def test_explain_lists_every_schema_violation_and_the_hot_path_only_the_first() -> None:
    body = job_body(1).replace(b"<State>Success</State>", b"<State>Exploded</State>")
    with pytest.raises(Invalid) as fast:
        READER.check(body, "xml", new_xml_parser())
    assert fast.value.reasons == ()
    assert fast.value.path is not None
    with pytest.raises(Invalid) as explained:
        READER.check(body, "xml", new_xml_parser(), explain=True)
    assert explained.value.reasons
    assert any("Exploded" in rule for _, rule in explained.value.reasons)


def states(job: str, count: int, first: int = 0) -> bytes:
    """One callback carrying ``count`` new states of ``job`` (EndTime one second apart)."""
    details = [
        f"<JobsDetail><JobId>{job}</JobId><Tag>Transcode</Tag><State>Failed</State>"
        f"<EndTime>2024-11-05T11:{second // 60:02d}:{second % 60:02d}+0800</EndTime></JobsDetail>"
        for second in range(first, first + count)
    ]
    [body] = bodies(details)
    return body


def test_a_job_whose_history_is_full_refuses_a_new_state_and_keeps_none_of_its_callback(database: Target) -> None:
    """The bound is checked inside the write (on PostgreSQL within the one statement that claims and records a
    state): the state past it names its JobsDetail and rolls the whole callback back."""
    full, fresh = "j" + "f" * 32, "j" + "e" * 32
    with store_for(database) as store:
        ingest = Ingest(store, READER)

        async def scenario() -> list[str | Invalid]:
            answers: list[str | Invalid] = []
            for body in (states(full, MAX_JOB_STATES), states(full, 1, MAX_JOB_STATES), states(full, 1, 3)):
                try:
                    answers.append((await ingest.ingest(received(body)))[1].outcome)
                except Invalid as refused:
                    answers.append(refused)
            return answers

        accepted, refused, again = asyncio.run(scenario())
        assert (accepted, again) == ("accepted", "duplicate")  # a state already recorded is still a duplicate
        assert isinstance(refused, Invalid)
        assert (refused.detail, refused.path) == (
            f"too many states for job {full}: its history already holds {MAX_JOB_STATES}",
            "/Response/JobsDetail[1]/JobId",
        )
        assert count(database, "job_states") == MAX_JOB_STATES

        with pytest.raises(Invalid) as within:  # the first state past the bound inside one callback
            asyncio.run(ingest.ingest(received(states(fresh, MAX_JOB_STATES + 1))))
        assert within.value.path == f"/Response/JobsDetail[{MAX_JOB_STATES + 1}]/JobId"
        assert count(database, "job_states") == MAX_JOB_STATES
        assert count(database, "callbacks") == 2  # nothing of the refused ones (the ingest path does not quarantine)
