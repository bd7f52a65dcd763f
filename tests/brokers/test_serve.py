"""Broker subscribers through a real `cos-relay serve`: every accepted callback reaches each broker, signed; a
broker killed and restarted under load loses nothing; a broker's refusal is retried; pause, replay and the
per-subscriber metrics work for brokers as they do for URLs."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.deliver.signing import generate_secret
from relay.store.records import Target
from tests.brokers import consume
from tests.brokers.consume import Consumed
from tests.brokers.servers import BrokerServer, Nats, RabbitMQ, Redis
from tests.chaos.harness import ADMIN_HEADERS, gateway
from tests.conftest import CALLBACK_TOKEN, job_body
from tests.live import ProcessServer, free_port, wait_until

pytestmark = pytest.mark.slow

#: Reads what a broker holds (or takes it, from a queue).
Reader = Callable[[], Coroutine[Any, Any, list[Consumed]]]
#: Short retries, so an outage's backlog drains in seconds once the broker is back.
SCHEDULE = "0.5,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"


def read(reader: Reader) -> list[Consumed]:
    return asyncio.run(reader())


@pytest.fixture
def serve(database: Target) -> Iterator[ProcessServer]:
    server = gateway(database, env={"RELAY_RETRY_SCHEDULE": SCHEDULE}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(serve: ProcessServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve.url, headers=ADMIN_HEADERS, timeout=30) as client:
        yield client


def subscribe(api: httpx.Client, name: str, kind: str, url: str, **options: Any) -> str:
    """Add a subscriber; return its signing secret."""
    secret = generate_secret()
    created = api.post("/api/subscribers", json={"name": name, "kind": kind, "url": url, "secret": secret, **options})
    assert created.status_code == 201, created.text
    return secret


def post_callback(api: httpx.Client, number: int) -> None:
    api.post(f"/cos/callback?token={CALLBACK_TOKEN}", content=job_body(number)).raise_for_status()


def event_ids(api: httpx.Client, subscriber: str, state: str | None = None) -> set[str]:
    query = {"subscriber": subscriber, "limit": "500", **({"state": state} if state else {})}
    return {item["event_id"] for item in api.get("/api/deliveries", params=query).json()["items"]}


def attempts_by_outcome(api: httpx.Client, subscriber: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "relay_delivery_attempts_total" and sample.labels.get("subscriber") == subscriber:
                found[sample.labels["outcome"]] = sample.value
    return found


def wait_for(reader: Reader, count: int, timeout: float = 60) -> list[Consumed]:
    """The messages once ``count`` distinct events are there."""
    found: list[Consumed] = []

    def enough() -> bool:
        found[:] = read(reader)
        return len({message.event_id for message in found}) >= count

    wait_until(enough, timeout=timeout, what=f"{count} distinct events at the broker, not {found}")
    return found


def test_a_real_serve_delivers_each_callback_to_every_broker_kind_signed_in_both_content_modes(
    api: httpx.Client, rabbitmq: RabbitMQ, nats_server: Nats, redis_server: Redis
) -> None:
    tag = free_port()
    exchange, queues = f"relay-{tag}", {mode: f"relay-{tag}-{mode}" for mode in ("structured", "binary")}
    asyncio.run(consume.declare_exchange(rabbitmq.url, exchange))
    asyncio.run(consume.bind_queue(rabbitmq.url, queues["structured"], "cos.#"))
    asyncio.run(consume.bind_queue(rabbitmq.url, queues["binary"], "cos.#", exchange))
    stream = f"RELAY_{tag}"
    asyncio.run(consume.add_stream(nats_server.url, stream, [f"s{tag}.>", f"b{tag}.>"]))

    readers: dict[str, Reader] = {}
    secrets: dict[str, str] = {}
    for mode in ("structured", "binary"):
        options = {"content_mode": mode}
        amqp_url = rabbitmq.url if mode == "structured" else f"{rabbitmq.url}?exchange={exchange}"
        secrets[f"amqp-{mode}"] = subscribe(api, f"amqp-{mode}", "rabbitmq", amqp_url, **options)
        readers[f"amqp-{mode}"] = partial(consume.amqp_messages, rabbitmq.url, queues[mode])
        prefix = f"{mode[0]}{tag}"
        nats_url = f"{nats_server.url}?prefix={prefix}"
        secrets[f"nats-{mode}"] = subscribe(api, f"nats-{mode}", "nats", nats_url, **options)
        readers[f"nats-{mode}"] = partial(subjects_under, nats_server.url, stream, prefix)
        redis_stream = f"relay-{tag}-{mode}"
        secrets[f"redis-{mode}"] = subscribe(
            api, f"redis-{mode}", "redis", f"{redis_server.url}?stream={redis_stream}&maxlen=1000", **options
        )
        readers[f"redis-{mode}"] = partial(consume.stream_entries, redis_server.url, redis_stream)

    count = 5
    for number in range(count):
        post_callback(api, number)

    for name, reader in readers.items():
        messages = wait_for(reader, count) if name.startswith(("nats", "redis")) else collect(reader, count)
        assert {message.event_id for message in messages} == event_ids(api, name), name
        for message in messages:
            verified = message.verified(secrets[name])
            if name.endswith("structured"):
                assert verified["type"] == "cos.job.succeeded"
                assert verified["id"] == message.event_id
            else:
                assert "type" not in verified  # the data alone; the attributes travel as headers
                assert any(value == message.event_id for value in message.headers.values() if value != "")
        if name.startswith("amqp"):
            assert {message.properties["delivery_mode"] for message in messages} == {2}
            assert {message.properties["routing_key"] for message in messages} == {"cos.job.succeeded"}
        if name == "amqp-binary":
            assert {consume.amqp_attributes(m)["type"] for m in messages} == {"cos.job.succeeded"}
    wait_until(lambda: all(attempts_by_outcome(api, name).get("success") == count for name in readers), timeout=30)


def collect(reader: Reader, count: int) -> list[Consumed]:
    """A queue's messages are taken as they are read: gather them until ``count`` distinct events."""
    taken: list[Consumed] = []

    def enough() -> bool:
        taken.extend(read(reader))
        return len({message.event_id for message in taken}) >= count

    wait_until(enough, timeout=60, what=f"{count} distinct events in the queue, not {taken}")
    return taken


async def subjects_under(url: str, stream: str, prefix: str) -> list[Consumed]:
    return [m for m in await consume.stream_messages(url, stream) if m.properties["subject"].startswith(f"{prefix}.")]


# -- A broker killed under load -------------------------------------------------------------------------------------


class Topology:
    """A fresh broker of one kind, and how the test makes its destination and reads what arrived."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.server: BrokerServer = {"rabbitmq": RabbitMQ, "nats": Nats, "redis": Redis}[kind]()
        self.taken: list[Consumed] = []

    def prepare(self) -> str:
        """Make what an operator makes (a queue, a stream); return the subscriber's URL."""
        if self.kind == "rabbitmq":
            asyncio.run(consume.bind_queue(self.server.url, "crash"))
            return self.server.url
        if self.kind == "nats":
            asyncio.run(consume.add_stream(self.server.url, "CRASH", ["cos.>"]))
            return self.server.url
        return f"{self.server.url}?stream=crash"

    def received(self) -> set[str]:
        if self.kind == "rabbitmq":  # taken from the queue as read: keep them
            self.taken += read(lambda: consume.amqp_messages(self.server.url, "crash"))
        elif self.kind == "nats":
            self.taken = read(lambda: consume.stream_messages(self.server.url, "CRASH"))
        else:
            self.taken = read(lambda: consume.stream_entries(self.server.url, "crash"))
        return {message.event_id for message in self.taken}


@pytest.mark.parametrize("kind", ["rabbitmq", "nats", "redis"])
@pytest.mark.timeout(300)
def test_a_broker_killed_and_restarted_under_load_loses_no_accepted_callback(kind: str, api: httpx.Client) -> None:
    topology = Topology(kind)
    topology.server.start()
    try:
        subscribe(api, "crash", kind, topology.prepare(), timeout=2, max_in_flight=8)
        numbers = itertools.count()
        accepted: list[int] = []
        stop = threading.Event()

        def load() -> None:  # callbacks keep coming, through the outage and after it
            with httpx.Client(base_url=api.base_url, timeout=30) as client:
                while not stop.is_set():
                    number = next(numbers)
                    post_callback(client, number)
                    accepted.append(number)
                    stop.wait(0.01)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        try:
            wait_until(lambda: len(topology.received()) >= 20, timeout=60, what="deliveries before the crash")
            topology.server.kill()
            before = len(accepted)
            wait_until(lambda: len(accepted) >= before + 50, timeout=60, what="callbacks accepted during the outage")
            wait_until(
                lambda: bool(attempts_by_outcome(api, "crash").keys() - {"success"}), timeout=60, what="failed attempts"
            )
            topology.server.start()
            wait_until(lambda: len(accepted) >= before + 100, timeout=60, what="callbacks accepted after the restart")
        finally:
            stop.set()
            loader.join(timeout=30)
        expected = event_ids(api, "crash")
        assert len(expected) == len(accepted)
        wait_until(lambda: topology.received() >= expected, timeout=120, what="every accepted callback consumed")
        wait_until(lambda: event_ids(api, "crash", "delivered") == expected, timeout=30, what="all recorded delivered")
        failures = attempts_by_outcome(api, "crash")
        assert failures.keys() - {"success"} <= {"connection_error", "timeout"}, failures
    finally:
        topology.server.remove()


# -- Refusals, pause, replay ----------------------------------------------------------------------------------------


def test_an_unroutable_message_is_retried_until_a_queue_is_bound(api: httpx.Client, rabbitmq: RabbitMQ) -> None:
    exchange, queue = f"unbound-{free_port()}", f"late-{free_port()}"
    asyncio.run(consume.declare_exchange(rabbitmq.url, exchange))
    subscribe(api, "late", "rabbitmq", f"{rabbitmq.url}?exchange={exchange}")
    post_callback(api, 1)
    [event] = [item["event_id"] for item in api.get("/api/deliveries", params={"subscriber": "late"}).json()["items"]]

    def log() -> list[dict[str, Any]]:  # by subscriber and event: a delivery of the event log has no id at first
        return list(api.get(f"/api/subscribers/late/deliveries/{event}").json()["attempts_log"])

    wait_until(lambda: len(log()) >= 2, timeout=30, what="two refused attempts")
    refused = log()
    assert {attempt["outcome"] for attempt in refused} == {"http_4xx"}
    assert {attempt["error"] for attempt in refused} == {
        f"unroutable: no queue bound to exchange {exchange!r} for cos.job.succeeded"
    }

    asyncio.run(consume.bind_queue(rabbitmq.url, queue, "cos.#", exchange))
    wait_until(lambda: log()[-1]["outcome"] == "success", timeout=30, what="delivered once a queue is bound")
    assert len(asyncio.run(consume.amqp_messages(rabbitmq.url, queue))) == 1
    assert attempts_by_outcome(api, "late")["http_4xx"] >= 2


def test_a_paused_broker_subscriber_holds_its_events_then_resume_and_replay_send_them(
    api: httpx.Client, redis_server: Redis
) -> None:
    tag = free_port()
    held, control = f"held-{tag}", f"control-{tag}"
    subscribe(api, "held", "redis", f"{redis_server.url}?stream={held}")
    subscribe(api, "control", "redis", f"{redis_server.url}?stream={control}")
    api.post("/api/subscribers/held/pause").raise_for_status()
    post_callback(api, 1)

    # The worker has been through the event: the other subscriber has it; the paused one has not.
    wait_for(lambda: consume.stream_entries(redis_server.url, control), 1)
    assert read(lambda: consume.stream_entries(redis_server.url, held)) == []
    assert event_ids(api, "held", "pending") == event_ids(api, "control")

    api.post("/api/subscribers/held/resume").raise_for_status()
    [first] = wait_for(lambda: consume.stream_entries(redis_server.url, held), 1)

    [event] = [item["event_id"] for item in api.get("/api/deliveries", params={"subscriber": "held"}).json()["items"]]
    api.post(f"/api/subscribers/held/deliveries/{event}/retry").raise_for_status()  # delivered in order: no id
    wait_until(lambda: len(read(lambda: consume.stream_entries(redis_server.url, held))) == 2, what="the replay")
    again = read(lambda: consume.stream_entries(redis_server.url, held))[-1]
    assert again.event_id == first.event_id
    assert attempts_by_outcome(api, "held") == {"success": 2}
