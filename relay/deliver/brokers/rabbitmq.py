"""RabbitMQ (AMQP 0-9-1): a persistent message published to an exchange with the event type as its routing key,
``mandatory`` and with publisher confirms, so the attempt succeeds only once the broker has taken responsibility
for it (written it to every queue it was routed to) and an unroutable message is a failure, not a silent drop.

The URL: ``amqp[s]://user:password@host[:port][/vhost][?exchange=NAME]``. The exchange defaults to ``amq.topic``,
the topic exchange every vhost has; the relay declares nothing: the operator binds queues (``cos.job.#``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel
from pamqp import commands as spec
from pamqp.common import FieldTable
from yarl import URL

from relay.deliver.brokers.base import Broker, Message, Refused
from relay.domain.delivery import Outcome

DEFAULT_EXCHANGE = "amq.topic"
#: AMQP's delivery mode for a message the broker writes to disk (in a durable queue).
PERSISTENT = 2
#: Application properties' prefix in the CloudEvents AMQP binding (binary mode, 3.1.3.1).
CE_PREFIX = "cloudEvents_"
NACK = "the broker did not confirm the message (nack)"


@dataclass
class Link:
    """A connection and its one confirming channel; the broker closes a channel on some errors (an exchange
    that does not exist), and the next publish opens another on the same connection."""

    connection: aiormq.Connection
    channel: AbstractChannel | None = None

    async def ready(self) -> AbstractChannel:
        if self.channel is None or self.channel.is_closed:
            self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        return self.channel


def exchange_of(target: URL) -> str:
    return target.query.get("exchange", DEFAULT_EXCHANGE)


class RabbitMQ(Broker[Link]):
    async def _connect(self, target: URL, address: str, port: int) -> Link:
        # The relay's own query (exchange) is not the client's: only the login and vhost go on.
        url = target.with_query(None).with_host(address).with_port(port)
        # TLS is checked against the name in the URL, though the connection goes to the vetted address.
        options: dict[str, Any] = {"server_hostname": target.host} if target.scheme == "amqps" else {}
        connection = aiormq.Connection(url, client_properties={"connection_name": "cos-relay"}, **options)
        link = Link(connection)
        try:
            await connection.connect()
            await link.ready()
        except BaseException:
            await self._disconnect(link)
            raise
        return link

    def _usable(self, connection: Link) -> bool:
        return not connection.connection.is_closed

    async def _publish(self, connection: Link, target: URL, message: Message, timeout: float) -> bytes:
        exchange = exchange_of(target)
        headers: FieldTable = {**message.signature}
        headers |= {f"{CE_PREFIX}{name}": value for name, value in message.attributes.items()}
        properties = spec.Basic.Properties(
            content_type=message.content_type,
            delivery_mode=PERSISTENT,
            message_id=message.event_id,
            message_type=message.event_type,
            headers=headers,
        )
        try:
            channel = await connection.ready()
            confirmation = await channel.basic_publish(
                message.body,
                exchange=exchange,
                routing_key=message.event_type,
                properties=properties,
                mandatory=True,
            )
        # Outcomes: the broker's "no" is the receiver's failure, like an HTTP answer. An address that names
        # nothing (no exchange, no queue bound for this routing key) or a login without the right is the
        # receiver's configuration to fix: HTTP_4XX, like a 404 or 403. A broker that could not take the
        # message (a nack: an internal error, a full queue that rejects publishes) is HTTP_5XX. Both retried.
        except aiormq.exceptions.PublishError:
            raise Refused(
                Outcome.HTTP_4XX, f"unroutable: no queue bound to exchange {exchange!r} for {message.event_type}"
            ) from None
        except aiormq.exceptions.DeliveryError:  # what aiormq raises for a nack
            raise Refused(Outcome.HTTP_5XX, NACK) from None
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise Refused(Outcome.HTTP_4XX, f"exchange {exchange!r} does not exist") from None
        except aiormq.exceptions.ChannelAccessRefused:
            raise Refused(Outcome.HTTP_4XX, f"access to exchange {exchange!r} refused") from None
        except aiormq.exceptions.ChannelClosed as exc:
            raise Refused(Outcome.HTTP_5XX, f"the broker closed the channel ({type(exc).__name__})") from None
        if not isinstance(confirmation, spec.Basic.Ack):
            raise Refused(Outcome.HTTP_5XX, NACK)
        return b""

    async def _disconnect(self, connection: Link) -> None:
        await connection.connection.close()
