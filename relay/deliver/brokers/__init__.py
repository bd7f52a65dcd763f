"""Message brokers as destinations: RabbitMQ, NATS JetStream and Redis Streams, one module each (see
`relay.deliver.brokers.base` for what they share).

Kafka has no destination here: no broker installs on the machines this is tested on, and a destination that has
never met its broker is not shipped. Its seam is `brokers` below: a module with a `Broker` subclass (connect to the
vetted address, publish with ``acks=all`` and wait for it, disconnect), and a `Kind` with its URL scheme.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime

from yarl import URL

from relay.deliver.destination import Destination
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import Attempt, Claim
from relay.domain.destinations import Kind

#: The options each broker's URL takes in its query (everything else is the broker client's business or a typo).
OPTIONS = {Kind.RABBITMQ: ("exchange",), Kind.NATS: ("prefix",), Kind.REDIS: ("stream", "maxlen")}
#: A NATS subject prefix: dot-separated tokens, no wildcards or spaces.
_SUBJECT = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def brokers(policy: AddressPolicy) -> dict[Kind, Destination]:
    """A destination for each broker kind, each connecting only to addresses ``policy`` allows."""
    return {kind: OnFirstUse(functools.partial(_broker, kind, policy)) for kind in OPTIONS}


def _broker(kind: Kind, policy: AddressPolicy) -> Destination:
    # Imported here: the three client libraries cost every gateway 0.1 s of CPU at start, and most have no broker
    # subscriber (the test suite starts hundreds of gateways).
    if kind is Kind.RABBITMQ:
        from relay.deliver.brokers.rabbitmq import RabbitMQ

        return RabbitMQ(policy)
    if kind is Kind.NATS:
        from relay.deliver.brokers.jetstream import JetStream

        return JetStream(policy)
    from relay.deliver.brokers.redis_streams import RedisStreams

    return RedisStreams(policy)


class OnFirstUse:
    """A destination made at its first delivery (a broker's start does nothing: it connects on first use anyway)."""

    def __init__(self, make: Callable[[], Destination]) -> None:
        self._make = make
        self._made: Destination | None = None

    async def start(self) -> None:
        """Nothing until the first delivery."""

    async def close(self) -> None:
        if self._made is not None:
            await self._made.close()

    async def send(self, claim: Claim, at: datetime) -> Attempt:
        if self._made is None:
            self._made = self._make()  # no await before it is set: concurrent first sends share one
            await self._made.start()
        return await self._made.send(claim, at)


def maxlen_of(target: URL) -> int | None:
    """A Redis URL's ``maxlen`` option; ValueError unless a positive integer."""
    value = target.query.get("maxlen")
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"maxlen must be a positive integer; not {value!r}")
    return int(value)


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
