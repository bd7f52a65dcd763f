"""Each broker destination against its real broker (Debian's packages, on loopback): what it publishes, how each
of the broker's answers becomes an attempt, and its connection kept, and made again after a restart."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from relay.deliver.brokers import brokers
from relay.deliver.destination import Destination
from relay.deliver.signing import generate_secret
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import Attempt, Claim, Outcome
from relay.domain.destinations import ContentMode, Kind, Route
from tests.brokers import consume
from tests.brokers.servers import Nats, RabbitMQ, Redis
from tests.live import free_port

pytestmark = pytest.mark.anyio

SECRET = generate_secret()
LOOPBACK = AddressPolicy.from_setting("127.0.0.0/8")


def event(number: int = 0, event_type: str = "cos.job.failed") -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"evt_{number:08d}",
            "source": "/cos/relay-test",
            "type": event_type,
            "subject": f"uploads/{number}.mp4",
            "time": "2026-12-07T05:00:00Z",
            "datacontenttype": "application/json",
            "data": {"job": number, "code": "Failed"},
        }
    )


def claim(
    kind: Kind,
    url: str,
    number: int = 0,
    *,
    mode: ContentMode = ContentMode.STRUCTURED,
    event_type: str = "cos.job.failed",
    timeout: float = 5.0,
) -> Claim:
    return Claim(
        delivery_id=number,
        event_id=f"evt_{number:08d}",
        body=event(number, event_type),
        subscriber_id=1,
        subscriber="broker",
        url=url,
        secrets=(SECRET,),
        timeout=timeout,
        retry_schedule=None,
        failures=0,
        trigger="first",
        created_at=datetime.now(UTC),
        route=Route(kind=kind, content_mode=mode),
    )


@pytest.fixture
async def destinations() -> AsyncIterator[dict[Kind, Destination]]:
    made = brokers(LOOPBACK)
    yield made
    for destination in made.values():
        await destination.close()


async def send(destinations: dict[Kind, Destination], claim: Claim) -> Attempt:
    return await destinations[claim.route.kind].send(claim, datetime.now(UTC))


def named(url: str, name: str) -> str:
    """A name unique to the test, so tests sharing a session's broker do not see each other's messages."""
    return f"{name}-{free_port()}"


# -- RabbitMQ ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_rabbitmq_publishes_persistent_confirmed_messages_routed_by_event_type_and_signed(
    rabbitmq: RabbitMQ, destinations: dict[Kind, Destination]
) -> None:
    queue = named(rabbitmq.url, "failed")
    await consume.bind_queue(rabbitmq.url, queue, "cos.job.failed")
    attempts = [await send(destinations, claim(Kind.RABBITMQ, rabbitmq.url, number)) for number in range(3)]
    assert [attempt.outcome for attempt in attempts] == [Outcome.SUCCESS] * 3

    messages = await consume.amqp_messages(rabbitmq.url, queue)
    assert [message.properties["message_id"] for message in messages] == [f"evt_{n:08d}" for n in range(3)]
    for number, message in enumerate(messages):
        assert message.properties["delivery_mode"] == 2
        assert message.properties["routing_key"] == "cos.job.failed"
        assert message.properties["content_type"] == "application/cloudevents+json"
        assert message.verified(SECRET)["data"] == {"job": number, "code": "Failed"}


@pytest.mark.slow
async def test_rabbitmq_binary_mode_sends_the_data_with_cloudevents_amqp_headers(
    rabbitmq: RabbitMQ, destinations: dict[Kind, Destination]
) -> None:
    exchange, queue = named(rabbitmq.url, "relay"), named(rabbitmq.url, "binary")
    await consume.declare_exchange(rabbitmq.url, exchange)
    await consume.bind_queue(rabbitmq.url, queue, "cos.#", exchange)
    url = f"{rabbitmq.url}?exchange={exchange}"
    assert (await send(destinations, claim(Kind.RABBITMQ, url, 7, mode=ContentMode.BINARY))).outcome is Outcome.SUCCESS

    [message] = await consume.amqp_messages(rabbitmq.url, queue)
    assert message.verified(SECRET) == {"job": 7, "code": "Failed"}
    assert message.properties["content_type"] == "application/json"
    assert consume.amqp_attributes(message) == {
        "specversion": "1.0",
        "id": "evt_00000007",
        "source": "/cos/relay-test",
        "type": "cos.job.failed",
        "subject": "uploads/7.mp4",
        "time": "2026-12-07T05:00:00Z",
    }


@pytest.mark.slow
async def test_rabbitmq_an_unroutable_message_is_a_failed_attempt_not_a_silent_drop(
    rabbitmq: RabbitMQ, destinations: dict[Kind, Destination]
) -> None:
    queue = named(rabbitmq.url, "succeeded-only")
    await consume.bind_queue(rabbitmq.url, queue, "cos.job.succeeded")
    attempt = await send(destinations, claim(Kind.RABBITMQ, rabbitmq.url, event_type="cos.job.unbound"))
    assert attempt.outcome is Outcome.HTTP_4XX
    assert attempt.error == "unroutable: no queue bound to exchange 'amq.topic' for cos.job.unbound"
    # The connection and its channel carry on: the next routable message goes through.
    later = await send(destinations, claim(Kind.RABBITMQ, rabbitmq.url, 1, event_type="cos.job.succeeded"))
    assert later.outcome is Outcome.SUCCESS
    assert len(await consume.amqp_messages(rabbitmq.url, queue)) == 1


@pytest.mark.slow
async def test_rabbitmq_a_missing_exchange_fails_and_the_next_attempt_reopens_the_channel(
    rabbitmq: RabbitMQ, destinations: dict[Kind, Destination]
) -> None:
    exchange, queue = named(rabbitmq.url, "later"), named(rabbitmq.url, "later-queue")
    url = f"{rabbitmq.url}?exchange={exchange}"
    attempt = await send(destinations, claim(Kind.RABBITMQ, url))
    assert (attempt.outcome, attempt.error) == (Outcome.HTTP_4XX, f"exchange {exchange!r} does not exist")

    await consume.declare_exchange(rabbitmq.url, exchange)
    await consume.bind_queue(rabbitmq.url, queue, "cos.#", exchange)
    assert (await send(destinations, claim(Kind.RABBITMQ, url, 1))).outcome is Outcome.SUCCESS
    assert len(await consume.amqp_messages(rabbitmq.url, queue)) == 1


@pytest.mark.slow
async def test_rabbitmq_a_message_the_broker_nacks_is_a_failed_attempt(
    rabbitmq: RabbitMQ, destinations: dict[Kind, Destination]
) -> None:
    exchange, queue = named(rabbitmq.url, "full"), named(rabbitmq.url, "one-only")
    await consume.declare_exchange(rabbitmq.url, exchange)
    # A queue that holds one message and refuses publishes beyond: RabbitMQ nacks them.
    limits = {"x-max-length": 1, "x-overflow": "reject-publish"}
    await consume.bind_queue(rabbitmq.url, queue, "cos.#", exchange, limits)
    url = f"{rabbitmq.url}?exchange={exchange}"
    first, second = [await send(destinations, claim(Kind.RABBITMQ, url, number)) for number in range(2)]
    assert first.outcome is Outcome.SUCCESS
    assert (second.outcome, second.error) == (Outcome.HTTP_5XX, "the broker did not confirm the message (nack)")
    assert len(await consume.amqp_messages(rabbitmq.url, queue)) == 1


# -- NATS JetStream ------------------------------------------------------------------------------------------------


async def test_nats_publishes_to_a_stream_under_the_prefix_acknowledged_and_signed(
    nats_server: Nats, destinations: dict[Kind, Destination]
) -> None:
    stream = named(nats_server.url, "RELAY").replace("-", "_")
    prefix = stream.lower()
    await consume.add_stream(nats_server.url, stream, [f"{prefix}.>"])
    url = f"{nats_server.url}?prefix={prefix}"
    attempt = await send(destinations, claim(Kind.NATS, url, 3))
    assert attempt.outcome is Outcome.SUCCESS
    assert orjson.loads(attempt.response_body) == {"stream": stream, "seq": 1, "duplicate": False}

    [message] = await consume.stream_messages(nats_server.url, stream)
    assert message.properties["subject"] == f"{prefix}.cos.job.failed"
    assert message.headers["Nats-Msg-Id"] == f"evt_00000003:{prefix}.cos.job.failed"
    assert message.headers["content-type"] == "application/cloudevents+json"
    assert message.verified(SECRET)["id"] == "evt_00000003"


async def test_nats_keeps_one_copy_of_an_event_published_twice(
    nats_server: Nats, destinations: dict[Kind, Destination]
) -> None:
    stream = named(nats_server.url, "TWICE").replace("-", "_")
    await consume.add_stream(nats_server.url, stream, [f"{stream.lower()}.>"])
    url = f"{nats_server.url}?prefix={stream.lower()}"
    first, again = [await send(destinations, claim(Kind.NATS, url, 5)) for _ in range(2)]
    assert (first.outcome, again.outcome) == (Outcome.SUCCESS, Outcome.SUCCESS)
    assert orjson.loads(again.response_body)["duplicate"] is True
    assert len(await consume.stream_messages(nats_server.url, stream)) == 1


async def test_nats_two_subscribers_whose_subjects_share_a_stream_each_get_the_event(
    nats_server: Nats, destinations: dict[Kind, Destination]
) -> None:
    stream = named(nats_server.url, "SHARED").replace("-", "_")
    await consume.add_stream(nats_server.url, stream, [f"{stream.lower()}.>"])
    for team in ("billing", "search"):
        url = f"{nats_server.url}?prefix={stream.lower()}.{team}"
        assert (await send(destinations, claim(Kind.NATS, url, 9))).outcome is Outcome.SUCCESS
    subjects = [message.properties["subject"] for message in await consume.stream_messages(nats_server.url, stream)]
    assert subjects == [f"{stream.lower()}.{team}.cos.job.failed" for team in ("billing", "search")]


async def test_nats_binary_mode_sends_the_data_with_ce_headers(
    nats_server: Nats, destinations: dict[Kind, Destination]
) -> None:
    stream = named(nats_server.url, "BINARY").replace("-", "_")
    await consume.add_stream(nats_server.url, stream, [f"{stream.lower()}.>"])
    url = f"{nats_server.url}?prefix={stream.lower()}"
    assert (await send(destinations, claim(Kind.NATS, url, 2, mode=ContentMode.BINARY))).outcome is Outcome.SUCCESS
    [message] = await consume.stream_messages(nats_server.url, stream)
    assert message.verified(SECRET) == {"job": 2, "code": "Failed"}
    assert message.headers["content-type"] == "application/json"
    assert (message.headers["ce-id"], message.headers["ce-type"]) == ("evt_00000002", "cos.job.failed")


async def test_nats_a_subject_no_stream_takes_is_a_failed_attempt(
    nats_server: Nats, destinations: dict[Kind, Destination]
) -> None:
    attempt = await send(destinations, claim(Kind.NATS, f"{nats_server.url}?prefix=nobody.listens"))
    assert (attempt.outcome, attempt.error) == (
        Outcome.HTTP_4XX,
        "no JetStream stream takes subject nobody.listens.cos.job.failed",
    )


# -- Redis Streams -------------------------------------------------------------------------------------------------


async def test_redis_appends_the_event_signed_to_the_stream_in_the_url(
    redis_server: Redis, destinations: dict[Kind, Destination]
) -> None:
    stream = named(redis_server.url, "events")
    url = f"{redis_server.url}/0?stream={stream}"
    attempt = await send(destinations, claim(Kind.REDIS, url, 4))
    assert attempt.outcome is Outcome.SUCCESS

    [entry] = await consume.stream_entries(redis_server.url, stream)
    assert attempt.response_body.decode() == entry.properties["entry"]
    assert (entry.headers["id"], entry.headers["content-type"]) == ("evt_00000004", "application/cloudevents+json")
    assert entry.verified(SECRET)["data"] == {"job": 4, "code": "Failed"}


async def test_redis_binary_mode_sends_the_data_with_ce_fields(
    redis_server: Redis, destinations: dict[Kind, Destination]
) -> None:
    stream = named(redis_server.url, "binary")
    url = f"{redis_server.url}?stream={stream}"
    assert (await send(destinations, claim(Kind.REDIS, url, 1, mode=ContentMode.BINARY))).outcome is Outcome.SUCCESS
    [entry] = await consume.stream_entries(redis_server.url, stream)
    assert entry.verified(SECRET) == {"job": 1, "code": "Failed"}
    assert (entry.headers["ce-id"], entry.headers["ce-source"]) == ("evt_00000001", "/cos/relay-test")


async def test_redis_maxlen_trims_the_stream_approximately(
    redis_server: Redis, destinations: dict[Kind, Destination]
) -> None:
    stream = named(redis_server.url, "trimmed")
    url = f"{redis_server.url}?stream={stream}&maxlen=10"
    # Approximate trimming drops whole nodes (100 entries each by default): send enough to fill several.
    outcomes = {(await send(destinations, claim(Kind.REDIS, url, number))).outcome for number in range(350)}
    assert outcomes == {Outcome.SUCCESS}
    assert len(await consume.stream_entries(redis_server.url, stream)) < 350


async def test_redis_a_bad_maxlen_is_a_failed_attempt_naming_it(
    redis_server: Redis, destinations: dict[Kind, Destination]
) -> None:
    attempt = await send(destinations, claim(Kind.REDIS, f"{redis_server.url}?maxlen=lots"))
    assert (attempt.outcome, attempt.error) == (Outcome.HTTP_4XX, "maxlen must be a positive integer; not 'lots'")


async def test_redis_a_key_of_another_type_is_a_failed_attempt(
    redis_server: Redis, destinations: dict[Kind, Destination]
) -> None:
    import redis.asyncio

    key = named(redis_server.url, "plain")
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.set(key, "not a stream")
    await client.aclose()
    attempt = await send(destinations, claim(Kind.REDIS, f"{redis_server.url}?stream={key}"))
    assert attempt.outcome is Outcome.HTTP_4XX
    assert attempt.error is not None
    assert attempt.error.startswith("Redis refused: WRONGTYPE")


# -- Every broker ------------------------------------------------------------------------------------------------

SCHEMES = {Kind.RABBITMQ: "amqp", Kind.NATS: "nats", Kind.REDIS: "redis"}


@pytest.mark.parametrize("kind", list(SCHEMES))
async def test_a_broker_not_listening_is_a_connection_error_that_holds_no_password(
    kind: Kind, destinations: dict[Kind, Destination]
) -> None:
    url = f"{SCHEMES[kind]}://user:s3cret-pass@127.0.0.1:{free_port()}/"
    attempt = await send(destinations, claim(kind, url))
    assert attempt.outcome is Outcome.CONNECTION_ERROR
    assert attempt.error
    assert "s3cret" not in attempt.error
    assert "127.0.0.1" not in attempt.error


@pytest.mark.parametrize("kind", list(SCHEMES))
async def test_an_address_the_policy_forbids_is_never_connected_to(kind: Kind) -> None:
    with Listener() as (port, accepted):
        strict = brokers(AddressPolicy())
        attempt = await strict[kind].send(claim(kind, f"{SCHEMES[kind]}://localhost:{port}/"), datetime.now(UTC))
        await strict[kind].close()
    assert attempt.outcome is Outcome.SSRF_BLOCKED
    assert attempt.error is not None
    assert "loopback" in attempt.error
    assert accepted == []


@pytest.mark.parametrize("kind", list(SCHEMES))
async def test_a_broker_that_accepts_and_never_answers_times_out_within_the_claims_timeout(
    kind: Kind, destinations: dict[Kind, Destination]
) -> None:
    with Listener() as (port, accepted):
        attempt = await send(destinations, claim(kind, f"{SCHEMES[kind]}://127.0.0.1:{port}/", timeout=0.5))
    assert (attempt.outcome, attempt.error) == (Outcome.TIMEOUT, "timeout after 0.5s")
    assert attempt.duration < 5
    assert accepted


class Listener:
    """A loopback TCP port that accepts connections and says nothing."""

    def __enter__(self) -> tuple[int, list[socket.socket]]:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen()
        self._socket.setblocking(False)
        self.accepted: list[socket.socket] = []
        self._task = asyncio.get_running_loop().create_task(self._accept())
        return self._socket.getsockname()[1], self.accepted

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            connection, _ = await loop.sock_accept(self._socket)
            self.accepted.append(connection)

    def __exit__(self, *exc_info: Any) -> None:
        self._task.cancel()
        for connection in self.accepted:
            connection.close()
        self._socket.close()


# -- A broker restart ----------------------------------------------------------------------------------------------


@pytest.fixture
def restartable_nats() -> Iterator[Nats]:
    server = Nats()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def restartable_redis() -> Iterator[Redis]:
    server = Redis()
    server.start()
    yield server
    server.remove()


async def test_nats_a_killed_broker_fails_attempts_until_it_is_back_then_the_next_attempt_reconnects(
    restartable_nats: Nats, destinations: dict[Kind, Destination]
) -> None:
    server = restartable_nats
    await consume.add_stream(server.url, "RESTART", ["cos.>"])
    assert (await send(destinations, claim(Kind.NATS, server.url, 1))).outcome is Outcome.SUCCESS
    server.kill()
    # Published before the client has read of the crash, it waits for an acknowledgement that never comes.
    down = await send(destinations, claim(Kind.NATS, server.url, 2, timeout=1))
    assert down.outcome in {Outcome.CONNECTION_ERROR, Outcome.TIMEOUT}
    assert (await send(destinations, claim(Kind.NATS, server.url, 2))).outcome is Outcome.CONNECTION_ERROR
    server.start()
    assert (await send(destinations, claim(Kind.NATS, server.url, 3))).outcome is Outcome.SUCCESS
    ids = [m.event_id for m in await consume.stream_messages(server.url, "RESTART")]
    assert ids == ["evt_00000001", "evt_00000003"]


async def test_redis_a_killed_broker_fails_attempts_until_it_is_back_then_the_next_attempt_reconnects(
    restartable_redis: Redis, destinations: dict[Kind, Destination]
) -> None:
    server = restartable_redis
    url = f"{server.url}?stream=restart"
    assert (await send(destinations, claim(Kind.REDIS, url, 1))).outcome is Outcome.SUCCESS
    server.kill()
    assert (await send(destinations, claim(Kind.REDIS, url, 2))).outcome is Outcome.CONNECTION_ERROR
    server.start()
    assert (await send(destinations, claim(Kind.REDIS, url, 3))).outcome is Outcome.SUCCESS
    ids = [m.event_id for m in await consume.stream_entries(server.url, "restart")]
    assert ids == ["evt_00000001", "evt_00000003"]
