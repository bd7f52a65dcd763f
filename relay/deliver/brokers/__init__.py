"""Message brokers as destinations: RabbitMQ, NATS JetStream and Redis Streams, one module each (see
`relay.deliver.brokers.base` for what they share).

Kafka has no destination here: no broker installs on the machines this is tested on, and a destination that has
never met its broker is not shipped. Its seam is this table: a module with a `Broker` subclass (connect to the
vetted address, publish with ``acks=all`` and wait for it, disconnect) and a `Kind` with its URL scheme.
"""

from __future__ import annotations

from relay.deliver.brokers.jetstream import JetStream
from relay.deliver.brokers.rabbitmq import RabbitMQ
from relay.deliver.brokers.redis_streams import RedisStreams
from relay.deliver.destination import Destination
from relay.deliver.ssrf import AddressPolicy
from relay.domain.destinations import Kind


def brokers(policy: AddressPolicy) -> dict[Kind, Destination]:
    """A destination for each broker kind, each connecting only to addresses ``policy`` allows."""
    return {Kind.RABBITMQ: RabbitMQ(policy), Kind.NATS: JetStream(policy), Kind.REDIS: RedisStreams(policy)}
