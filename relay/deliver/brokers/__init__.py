"""Message brokers as destinations: RabbitMQ, NATS JetStream and Redis Streams, one module each (see
`relay.deliver.brokers.base` for what they share).

Kafka has no destination here: no broker installs on the machines this is tested on, and a destination that has
never met its broker is not shipped. Its seam is `brokers` below: a module with a `Broker` subclass (connect to the
vetted address, publish with ``acks=all`` and wait for it, disconnect), and a `Kind` with its URL scheme.
"""

from __future__ import annotations

import re

from yarl import URL

from relay.deliver.brokers.jetstream import JetStream
from relay.deliver.brokers.rabbitmq import RabbitMQ
from relay.deliver.brokers.redis_streams import RedisStreams, maxlen_of
from relay.deliver.destination import Destination
from relay.deliver.ssrf import AddressPolicy
from relay.domain.destinations import Kind

#: The options each broker's URL takes in its query (everything else is the broker client's business or a typo).
OPTIONS = {Kind.RABBITMQ: ("exchange",), Kind.NATS: ("prefix",), Kind.REDIS: ("stream", "maxlen")}
#: A NATS subject prefix: dot-separated tokens, no wildcards or spaces.
_SUBJECT = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def brokers(policy: AddressPolicy) -> dict[Kind, Destination]:
    """A destination for each broker kind, each connecting only to addresses ``policy`` allows."""
    return {Kind.RABBITMQ: RabbitMQ(policy), Kind.NATS: JetStream(policy), Kind.REDIS: RedisStreams(policy)}


def check_options(kind: Kind, url: str) -> None:
    """ValueError naming a broker URL's query option that could never work: refused when the subscriber is made, not
    found out by its first failed delivery."""
    query = URL(url).query
    unknown = sorted(set(query) - set(OPTIONS[kind]))
    if unknown:
        raise ValueError(f"a {kind} URL's query takes {' and '.join(OPTIONS[kind])}; not {', '.join(unknown)}")
    if kind is Kind.REDIS:
        maxlen_of(URL(url))
    prefix = query.get("prefix")
    if kind is Kind.NATS and prefix is not None and not _SUBJECT.fullmatch(prefix):
        raise ValueError(f"prefix must be NATS subject tokens separated by dots (no wildcards); not {prefix!r}")
