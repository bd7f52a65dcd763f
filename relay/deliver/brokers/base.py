"""What every broker destination shares: the message built from a claim, one connection per broker URL made to an
address the SSRF policy vetted, and every failure turned into an `Attempt`.

A connection is made on the first delivery to its URL and reused by every later one; one that fails (the broker
restarted, a publish timed out) is dropped, and the next attempt makes a new one, so a broker's outage is
survived the way a URL's is: attempts fail, the worker retries them on the subscriber's schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import orjson
from yarl import URL

from relay.deliver.client import CLOUDEVENTS_JSON
from relay.deliver.signing import Signers
from relay.deliver.ssrf import AddressPolicy, ForbiddenDestination
from relay.domain.delivery import Attempt, Claim, Outcome
from relay.domain.destinations import DEFAULT_PORTS, ContentMode
from relay.domain.events import binary

#: Seconds a failed connection may take to close before it is abandoned.
CLOSE_WITHIN = 2.0
#: A broker's own error text kept in the attempt log, at most.
REASON_LIMIT = 200

Connection = TypeVar("Connection")


@dataclass(frozen=True)
class Message:
    """One event as a broker carries it, signed like a webhook so a consumer verifies it the same way."""

    event_id: str
    #: The CloudEvent's type (``cos.job.failed``): the routing key or subject.
    event_type: str
    #: The whole CloudEvent (structured mode) or its data (binary mode): what the signature covers.
    body: bytes
    content_type: str
    #: Binary mode: the CloudEvents attributes by bare name (each binding spells its own prefix); else empty.
    attributes: dict[str, str]
    #: The Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).
    signature: dict[str, str]


def message_of(claim: Claim, at: datetime, signers: Signers) -> Message:
    if claim.route.content_mode is ContentMode.BINARY:
        body, headers = binary(claim.body)
        content_type = headers.pop("Content-Type")
        attributes = {name.removeprefix("ce-"): value for name, value in headers.items()}
        event_type = attributes["type"]
    else:
        body, content_type, attributes = claim.body, CLOUDEVENTS_JSON, {}
        event_type = str(orjson.loads(body)["type"])
    signature = signers(claim.secrets).headers(claim.event_id, int(at.timestamp()), body)
    return Message(claim.event_id, event_type, body, content_type, attributes, signature)


class Refused(Exception):
    """The broker answered, and not with a yes: an outcome and a short, secret-free reason."""

    def __init__(self, outcome: Outcome, why: str) -> None:
        super().__init__(why)
        self.outcome = outcome
        self.why = why[:REASON_LIMIT]


def describe(exc: BaseException) -> str:
    """Class names only: a client library's message may hold the URL, and so the broker's password."""
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed ({type(exc).__name__})"
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and type(cause) is not type(exc):  # a client's wrapping of the socket's error
        return f"{type(exc).__name__} ({type(cause).__name__})"
    return type(exc).__name__


class Broker(ABC, Generic[Connection]):
    """A destination of one broker kind. Subclasses connect, tell whether a connection is still usable,
    publish (raising `Refused` for the broker's no) and disconnect."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._signers = Signers()
        self._connections: dict[str, Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        return None  # connections are made on first use, on the delivery thread's loop

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await self._close_quietly(connection)

    async def send(self, claim: Claim, at: datetime) -> Attempt:
        started = time.monotonic()

        def attempt(outcome: Outcome, error: str | None = None, answer: bytes = b"") -> Attempt:
            return Attempt(outcome, None, time.monotonic() - started, error, answer, None)

        connection: Connection | None = None
        try:
            target = URL(claim.url)
            message = message_of(claim, at, self._signers)
            async with asyncio.timeout(claim.timeout):
                connection = await self._connection(claim.url, target)
                answer = await self._publish(connection, target, message, claim.timeout)
            return attempt(Outcome.SUCCESS, answer=answer)
        except Refused as exc:
            # The connection answered: it stays (a channel the broker closed is reopened by `_publish`).
            return attempt(exc.outcome, exc.why)
        except ForbiddenDestination as exc:
            return attempt(Outcome.SSRF_BLOCKED, str(exc))
        except TimeoutError:
            # A broker that does not answer in time may be gone without a word (no RST): start afresh next time.
            await self._discard(claim.url, connection)
            return attempt(Outcome.TIMEOUT, f"timeout after {claim.timeout:g}s")
        except Exception as exc:
            # Refused connections, resets, a broker that closed the connection, DNS: all the transport's.
            await self._discard(claim.url, connection)
            return attempt(Outcome.CONNECTION_ERROR, describe(exc))

    async def _connection(self, url: str, target: URL) -> Connection:
        connection = self._connections.get(url)
        if connection is not None and self._usable(connection):
            return connection
        # One connection per URL: attempts that find none wait for the one being made.
        async with self._locks.setdefault(url, asyncio.Lock()):
            connection = self._connections.get(url)
            if connection is not None:
                if self._usable(connection):
                    return connection
                await self._discard(url, connection)
            host, port = target.host or "", target.explicit_port or DEFAULT_PORTS[target.scheme]
            # Resolved once and vetted; the client connects to that address, never to a lookup of its own.
            addresses = await self._policy.resolve(host, port)
            failure: Exception | None = None
            for address in addresses:
                try:
                    connection = await self._connect(target, address, port)
                except Exception as exc:  # the next address may answer
                    failure = exc
                    continue
                self._connections[url] = connection
                return connection
            raise failure or OSError(f"{host} has no address")

    async def _discard(self, url: str, connection: Connection | None) -> None:
        if connection is not None and self._connections.get(url) is connection:
            del self._connections[url]
        if connection is not None:
            await self._close_quietly(connection)

    async def _close_quietly(self, connection: Connection) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WITHIN):
                await self._disconnect(connection)

    @abstractmethod
    async def _connect(self, target: URL, address: str, port: int) -> Connection: ...

    @abstractmethod
    def _usable(self, connection: Connection) -> bool: ...

    @abstractmethod
    async def _publish(self, connection: Connection, target: URL, message: Message, timeout: float) -> bytes:
        """Publish and wait for the broker to take responsibility; return its answer worth keeping, if any."""

    @abstractmethod
    async def _disconnect(self, connection: Connection) -> None: ...
