"""The delivery worker on its own thread and event loop: woken from any thread, started and stopped by the app."""

from __future__ import annotations

import asyncio
import threading

import pytest

from relay.deliver.destinations import Destinations
from relay.deliver.runner import DeliveryThread
from relay.deliver.signing import generate_secret
from relay.deliver.ssrf import AddressPolicy
from relay.deliver.worker import DeliveryWorker
from relay.domain.clock import utc_now
from relay.domain.filters import Filter
from relay.domain.retry import RetryPolicy
from relay.domain.subscribers import SubscriberSpec
from relay.store import Store, store_for
from relay.store.records import Target
from tests.conftest import FAKE_HOST, FAKE_NETWORK, job_body, record
from tests.fakes import FakeSender, Reply, Request, settle

#: The PostgreSQL store wakes the loop its own way (LISTEN/NOTIFY): both backends.
pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]


class ThreadedSubscriber:
    """Answers 204 and notes the thread each request was sent from."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def __call__(self, request: Request) -> Reply:
        self.threads.add(threading.current_thread().name)
        return Reply()


def delivery_thread(store: Store, sender: FakeSender) -> DeliveryThread:
    # An hour's poll: only a wake-up gets the worker to look for the events recorded after it started.
    destinations = Destinations.of(sender)
    worker = DeliveryWorker(store, destinations, RetryPolicy(), utc_now, poll_interval=3600)
    return DeliveryThread(worker, destinations, grace=1.0)


async def test_a_wake_up_from_the_http_loop_gets_the_event_sent_from_the_delivery_thread(database: Target) -> None:
    handler = ThreadedSubscriber()
    sender = FakeSender(handler, policy=AddressPolicy.from_setting(FAKE_NETWORK))
    with store_for(database) as store:
        store.add_subscriber(SubscriberSpec("hook", f"{FAKE_HOST}/ok", generate_secret(), Filter()), utc_now())
        delivery = delivery_thread(store, sender)
        await delivery.start()
        try:
            assert sender.started
            await record(store, job_body(1), job_body(2))
            delivery.wake()
            delivery.wake()  # coalesced with the first: one cross-thread call
            await settle(lambda: len(sender.requests) == 2, what="both events sent")
        finally:
            await delivery.stop()
        assert handler.threads == {"relay-delivery"}
        assert not sender.started  # closed on its own loop, before stop() returned
        delivered = store.list_deliveries(state="delivered").items
        assert len(delivered) == 2


async def test_a_sender_that_cannot_start_fails_the_start_with_its_own_error(database: Target) -> None:
    class Broken(FakeSender):
        async def start(self) -> None:
            raise OSError("no sockets left")

    with store_for(database) as store:
        delivery = delivery_thread(store, Broken(ThreadedSubscriber()))
        with pytest.raises(OSError, match="no sockets left"):
            await delivery.start()


async def test_waking_before_the_thread_starts_or_after_it_stopped_is_harmless(database: Target) -> None:
    sender = FakeSender(ThreadedSubscriber())
    with store_for(database) as store:
        delivery = delivery_thread(store, sender)
        delivery.wake()
        await delivery.start()
        await delivery.stop()
        delivery.wake()
    assert not sender.started


async def test_the_delivery_loop_is_the_same_kind_as_the_servers(database: Target) -> None:
    kinds: list[str] = []

    class Noting(FakeSender):
        async def start(self) -> None:
            kinds.append(type(asyncio.get_running_loop()).__module__)
            await super().start()

    with store_for(database) as store:
        delivery = delivery_thread(store, Noting(ThreadedSubscriber()))
        await delivery.start()
        await delivery.stop()
    assert kinds == [type(asyncio.get_running_loop()).__module__]
