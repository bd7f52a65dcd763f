"""Confirming callbacks against COS, in the store, on both backends: the jobs of a callback to confirm wait with it
(one transaction), their deliveries never claimed meanwhile; a verdict releases or holds them for good, once; an
admin releases or discards an unconfirmed callback; retention never prunes a delivery still waiting; removing
its subscriber cancels it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.callback import Received
from relay.domain.confirm import ConfirmScope, Reason, Verdict, to_confirm
from relay.domain.filters import Filter
from relay.domain.retention import Cutoffs
from relay.domain.subscribers import SubscriberSpec
from relay.ingest import Ingest, Reader
from relay.store import Store, store_for
from relay.store.records import Target
from relay.validate.parse import new_xml_parser
from tests.conftest import callback_schema, job_body, job_id
from tests.databases import rows

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=5)
MEDIA = ConfirmScope("media", "examplebucket-1250000000", frozenset({"media"}))


def received(body: bytes, at: datetime = AT) -> Received:
    return Received(at, "127.0.0.1", "application/xml", body, "xml")


async def held(store: Store, *numbers: int, at: datetime = AT) -> list[int]:
    """Callbacks of jobs ``numbers`` recorded for a source with confirm: their ids."""
    ingest = Ingest(store, Reader(callback_schema()), [MEDIA])
    return [(await ingest.ingest(received(job_body(number), at)))[1].callback_id for number in numbers]


def with_subscriber(store: Store) -> None:
    store.add_subscriber(SubscriberSpec("hook", "http://192.0.2.1/hook", generate_secret(), Filter()), AT)


def states(database: Target) -> list[str]:
    return [row["state"] for row in rows(database, "SELECT state FROM deliveries ORDER BY id")]


def verdicts(store: Store, *given: tuple[int, Reason | None]) -> list[Verdict]:
    """COS's answer for jobs ``given`` (number, why not confirmed), applied; the verdicts the store applied."""
    keys = {job.job_id: job.item_key for job in asyncio.run(store.waiting_confirmations("media", 100))}
    chosen = [Verdict(keys.get(job_id(number), ""), job_id(number), reason) for number, reason in given]
    return asyncio.run(store.settle_confirmations(chosen, AT))


def test_a_callbacks_jobs_wait_with_it_and_no_claim_takes_their_deliveries(database: Target) -> None:
    with store_for(database) as store:
        with_subscriber(store)
        [callback] = asyncio.run(held(store, 1))
        assert states(database) == ["confirming"]
        assert asyncio.run(store.claim(AT + timedelta(days=1), LEASE, 10)) == []
        assert asyncio.run(store.next_due()) is None
        [waiting] = asyncio.run(store.waiting_confirmations("media", 10))
        assert (waiting.job_id, waiting.state, waiting.family) == (job_id(1), "Success", "media")
        [listed] = asyncio.run(store.list_callbacks()).items
        assert (listed["id"], listed["confirmation"]) == (callback, "waiting")
        assert asyncio.run(store.waiting_confirmations("docs", 10)) == []


def test_a_confirmed_job_is_released_once_and_claimed(database: Target) -> None:
    with store_for(database) as store:
        with_subscriber(store)
        asyncio.run(held(store, 1))
        assert len(verdicts(store, (1, None))) == 1
        assert verdicts(store, (1, None)) == []  # another replica's same verdict: applied once
        assert states(database) == ["pending"]
        [claim] = asyncio.run(store.claim(AT, LEASE, 10))
        assert claim.subscriber == "hook"
        assert [row["confirmation"] for row in asyncio.run(store.list_callbacks()).items] == ["confirmed"]
        assert asyncio.run(store.waiting_confirmations("media", 10)) == []


def test_an_unconfirmed_job_is_held_for_good_with_its_reason(database: Target) -> None:
    with store_for(database) as store:
        with_subscriber(store)
        [forged, mismatch] = asyncio.run(held(store, 1, 2))
        verdicts(store, (1, "nonexistent"), (2, "state_differs"))
        assert states(database) == ["unconfirmed", "unconfirmed"]
        assert asyncio.run(store.claim(AT + timedelta(days=1), LEASE, 10)) == []
        [reason] = [item["reason"] for item in asyncio.run(store.callback_confirmations(forged))]
        assert reason == "nonexistent"
        job = asyncio.run(store.get_job(job_id(2)))
        assert job is not None
        assert job["confirmation"] is not None
        assert (job["confirmation"]["status"], job["confirmation"]["reason"]) == ("unconfirmed", "state_differs")
        assert {row["confirmation"] for row in asyncio.run(store.list_callbacks()).items} == {"unconfirmed"}
        assert mismatch != forged


def test_an_admin_releases_or_discards_an_unconfirmed_callback(database: Target) -> None:
    with store_for(database) as store:
        with_subscriber(store)
        [released, discarded, confirmed] = asyncio.run(held(store, 1, 2, 3))
        verdicts(store, (1, "nonexistent"), (2, "nonexistent"), (3, None))
        assert store.decide_unconfirmed(released, "release", AT) == 1
        assert store.decide_unconfirmed(discarded, "discard", AT) == 1
        assert store.decide_unconfirmed(released, "discard", AT) is None  # decided already
        assert store.decide_unconfirmed(confirmed, "release", AT) is None  # nothing unconfirmed in it
        assert states(database) == ["pending", "cancelled", "pending"]
        summary = {row["id"]: row["confirmation"] for row in asyncio.run(store.list_callbacks()).items}
        assert summary == {released: "released", discarded: "discarded", confirmed: "confirmed"}


def test_retention_never_prunes_a_delivery_waiting_for_cos(database: Target) -> None:
    with store_for(database) as store:
        with_subscriber(store)
        long_ago = AT - timedelta(days=400)
        asyncio.run(held(store, 1, 2, at=long_ago))
        verdicts(store, (2, "nonexistent"))
        # The worker's claims pass both events (their deliveries are rows, held): the rows are then all that
        # owes them, and a finished one may go with the window.
        assert asyncio.run(store.claim(AT, LEASE_MARGIN, 10)) == []
        cutoffs = Cutoffs(raw=AT, jobs=AT)
        while sum(asyncio.run(store.prune(cutoffs, 100, AT, 0)).values()):
            pass
        # The unconfirmed one is not owed: it went with the raw window. The waiting one stays, and its event.
        assert states(database) == ["confirming"]
        assert len(rows(database, "SELECT id FROM events")) == 1
        [waiting] = asyncio.run(store.waiting_confirmations("media", 10))
        assert waiting.job_id == job_id(1)
        # Confirmed after its callback was pruned: released all the same.
        assert len(verdicts(store, (1, None))) == 1
        assert states(database) == ["pending"]


def test_removing_a_subscriber_cancels_its_deliveries_waiting_or_unconfirmed(database: Target) -> None:
    with store_for(database) as store:
        with_subscriber(store)
        asyncio.run(held(store, 1, 2))
        verdicts(store, (2, "nonexistent"))
        assert store.remove_subscriber("hook", AT) == 2
        assert states(database) == ["cancelled", "cancelled"]


def test_only_the_jobs_of_a_source_with_confirm_wait() -> None:
    reader = Reader(callback_schema())
    callback = reader.read(received(job_body(1)), new_xml_parser()).callback
    assert [job.job_id for job in to_confirm(callback, [MEDIA])] == [job_id(1)]
    other = ConfirmScope("other", "otherbucket-1250000000", frozenset({"media"}))
    assert to_confirm(callback, [other]) == ()
    assert to_confirm(callback, []) == ()
