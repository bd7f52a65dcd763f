"""Reading back what the relay published, as a consumer would, and checking it the way a consumer can: the
Standard Webhooks signature with the official `standardwebhooks` library."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiormq
import nats
import orjson
import redis.asyncio
from nats.js.api import StreamConfig
from standardwebhooks.webhooks import Webhook

from relay.deliver.brokers.rabbitmq import CE_PREFIX as AMQP_CE_PREFIX


@dataclass(frozen=True)
class Consumed:
    """One message: its body and its headers (properties, headers or fields), names as the binding spells them."""

    body: bytes
    headers: dict[str, str]
    #: Everything else the broker tells (AMQP's delivery mode, content type, message id).
    properties: dict[str, Any]

    @property
    def event_id(self) -> str:
        return self.headers["webhook-id"]

    def verified(self, secret: str) -> Any:
        """The body, once its signature is checked (raises WebhookVerificationError otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- RabbitMQ ---------------------------------------------------------------------------------------------------


async def bind_queue(
    url: str, queue: str, pattern: str = "cos.#", exchange: str = "amq.topic", arguments: dict[str, Any] | None = None
) -> None:
    """A durable queue bound to ``exchange`` for ``pattern``, as an operator makes one."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True, arguments=arguments)
        await channel.queue_bind(queue, exchange, routing_key=pattern)
    finally:
        await connection.close()


async def declare_exchange(url: str, exchange: str) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    finally:
        await connection.close()


async def amqp_messages(url: str, queue: str) -> list[Consumed]:
    """Every message in ``queue``, taken (and acknowledged)."""
    connection = await aiormq.connect(url)
    taken: list[Consumed] = []
    try:
        channel = await connection.channel()
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if message.delivery_tag is None:  # Basic.GetEmpty
                return taken
            header = message.header.properties
            headers = {name: _text(value) for name, value in (header.headers or {}).items()}
            properties = {
                "delivery_mode": header.delivery_mode,
                "content_type": header.content_type,
                "message_id": header.message_id,
                "type": header.message_type,
                "routing_key": message.routing_key,
            }
            taken.append(Consumed(message.body, headers, properties))
    finally:
        await connection.close()


def amqp_attributes(message: Consumed) -> dict[str, str]:
    """The CloudEvents attributes of a binary-mode AMQP message."""
    return {k.removeprefix(AMQP_CE_PREFIX): v for k, v in message.headers.items() if k.startswith(AMQP_CE_PREFIX)}


# -- NATS JetStream ----------------------------------------------------------------------------------------------


def trusting(ca: Path) -> ssl.SSLContext:
    """A TLS context that trusts only ``ca``."""
    return ssl.create_default_context(cafile=str(ca))


async def add_stream(url: str, name: str, subjects: list[str], tls: ssl.SSLContext | None = None) -> None:
    client = await nats.connect(url, tls=tls)
    try:
        await client.jetstream().add_stream(StreamConfig(name=name, subjects=subjects))
    finally:
        await client.close()


async def stream_messages(url: str, name: str) -> list[Consumed]:
    """Every message the stream holds, by sequence."""
    client = await nats.connect(url)
    try:
        manager = client.jetstream()
        info = await manager.stream_info(name)
        found: list[Consumed] = []
        if not info.state.messages:
            return found
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await manager.get_msg(name, sequence)
            headers = {name: _text(value) for name, value in (message.headers or {}).items()}
            found.append(Consumed(message.data or b"", headers, {"subject": message.subject, "seq": sequence}))
        return found
    finally:
        await client.close()


# -- Redis Streams -------------------------------------------------------------------------------------------------


async def stream_entries(url: str, stream: str) -> list[Consumed]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(stream)  # type: ignore[assignment]
    finally:
        await client.aclose()
    found = []
    for entry_id, fields in entries:
        headers = {_text(k): _text(v) for k, v in fields.items() if k != b"body"}
        found.append(Consumed(fields[b"body"], headers, {"entry": _text(entry_id)}))
    return found


def event_of(message: Consumed) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(message.body)
    return parsed
