"""Redis Streams: one XADD per event, so the attempt succeeds once Redis has appended the entry.

The URL: ``redis[s]://[[user]:password@]host[:port][/db][?stream=NAME&maxlen=N]``. The stream defaults to
``cos-relay``; ``maxlen`` trims it to about N entries (``MAXLEN ~``: Redis trims whole nodes, cheaply). An entry's
fields: ``id`` (the event id), ``content-type``, ``body`` (the CloudEvent, or its data in binary mode, with
``ce-*`` fields for the attributes) and the Standard Webhooks signature fields.

How durable an appended entry is depends on the server's persistence (``appendonly``, ``appendfsync``): Redis
acknowledges a write before it reaches the disk unless told otherwise. That is the operator's choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from yarl import URL

from relay.deliver.brokers import maxlen_of
from relay.deliver.brokers.base import Broker, Message, Refused
from relay.domain.delivery import Outcome

DEFAULT_STREAM = "cos-relay"
#: Field names' prefix for the CloudEvents attributes in binary mode (as the HTTP binding's headers).
CE_PREFIX = "ce-"


class PinnedTLS(SSLConnection):
    """A TLS connection to the vetted address whose certificate is checked against the name in the URL."""

    def __init__(self, *, server_hostname: str, **options: Any) -> None:
        super().__init__(**options)
        self._server_hostname = server_hostname

    def _connection_arguments(self) -> Mapping[str, Any]:
        return {**super()._connection_arguments(), "server_hostname": self._server_hostname}


def stream_of(target: URL) -> str:
    return target.query.get("stream") or DEFAULT_STREAM


class RedisStreams(Broker["redis.asyncio.Redis"]):
    async def _connect(self, target: URL, address: str, port: int) -> redis.asyncio.Redis:
        database = target.path.strip("/") or "0"
        options: dict[str, Any] = {}
        if target.scheme == "rediss":
            options = {"connection_class": PinnedTLS, "server_hostname": target.host}
        pool = redis.asyncio.ConnectionPool(
            host=address,
            port=port,
            db=int(database) if database.isdigit() else 0,
            username=target.user or None,
            password=target.password,
            client_name="cos-relay",
            # One try per attempt: the worker retries on the subscriber's schedule, and a retried XADD could append
            # the entry twice.
            retry=Retry(NoBackoff(), 0),
            **options,
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        try:
            await client.ping()  # a wrong password is told now, not by the first XADD
        except BaseException:
            await client.aclose(close_connection_pool=True)
            raise
        return client

    def _usable(self, connection: redis.asyncio.Redis) -> bool:
        return True  # its pool replaces a broken connection with a new one to the same address

    async def _publish(self, connection: redis.asyncio.Redis, target: URL, message: Message, timeout: float) -> bytes:
        try:
            maxlen = maxlen_of(target)
        except ValueError as exc:
            raise Refused(Outcome.HTTP_4XX, str(exc)) from None
        fields: dict[str, str | bytes] = {
            "id": message.event_id,
            "content-type": message.content_type,
            "body": message.body,
            **message.signature,
        }
        fields |= {f"{CE_PREFIX}{name}": value for name, value in message.attributes.items()}
        try:
            entry = await connection.xadd(stream_of(target), fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        # A login without the right, or a key of another type, is the receiver's configuration to fix (HTTP_4XX,
        # like a 403 or 409); any other error answer (out of memory, a read-only replica) is the server's (HTTP_5XX).
        except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
            raise Refused(Outcome.HTTP_4XX, f"Redis refused: {type(exc).__name__}") from None
        except redis.exceptions.ResponseError as exc:
            outcome = Outcome.HTTP_4XX if str(exc).startswith("WRONGTYPE") else Outcome.HTTP_5XX
            raise Refused(outcome, f"Redis refused: {exc}") from None
        return entry if isinstance(entry, bytes) else str(entry).encode()

    async def _disconnect(self, connection: redis.asyncio.Redis) -> None:
        await connection.aclose(close_connection_pool=True)
