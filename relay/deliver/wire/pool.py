"""The connections: opened only to addresses the SSRF guard vetted, kept alive per origin, bounded in number."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque

from aiohappyeyeballs import AddrInfoType, start_connection

from relay.deliver.ssrf import AddressPolicy
from relay.deliver.wire.response import Connection
from relay.deliver.wire.target import Target

#: An idle connection older than this is closed rather than reused (aiohttp's keepalive_timeout).
KEEPALIVE = 15.0
#: How long a name's vetted addresses are reused for new connections (aiohttp's ttl_dns_cache).
DNS_TTL = 10.0
#: Names whose addresses are kept; beyond this the cache starts over.
DNS_CACHE = 1024
#: RFC 8305's connection attempt delay, as aiohttp used it.
HAPPY_EYEBALLS_DELAY = 0.25


class LookupFailed(OSError):
    """The name did not resolve; `os_error` says how (gaierror, mostly)."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(os_error.errno, os_error.strerror)
        self.os_error = os_error


class ConnectFailed(Exception):
    """No vetted address took the connection (refused, unreachable, the TLS handshake or certificate failed);
    `cause` says how.

    Wrapped so a connect's own ETIMEDOUT is not mistaken for the attempt's deadline.
    """

    def __init__(self, cause: OSError | RuntimeError) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class Pool:
    """At most ``limit`` connections in use at once and at most ``limit`` open; idle ones reused newest first."""

    def __init__(self, policy: AddressPolicy, *, limit: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._policy = policy
        self._limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[tuple[Connection, float]]] = {}
        self._idle_count = 0
        self._busy = 0
        self._all: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._addresses: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._closed = False

    async def acquire(self, target: Target, *, fresh: bool = False) -> Connection:
        """A connection to ``target``'s origin: an idle one (unless ``fresh``), else a new one (which may raise
        `ForbiddenDestination`, `LookupFailed` or `ConnectFailed`)."""
        await self._slots.acquire()
        try:
            idle = None if fresh else self._idle.get(target.key)
            now = time.monotonic()
            while idle:
                connection, since = idle.pop()
                self._idle_count -= 1
                transport = connection.transport
                alive = now - since < KEEPALIVE
                if alive and not connection.closed and transport is not None and not transport.is_closing():
                    self._busy += 1
                    return connection
                self._drop(connection)
            connection = await self._connect(target)
            self._busy += 1
            return connection
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: Connection) -> None:
        """Back to the idle ones if its last response left it reusable; closed otherwise."""
        self._busy -= 1
        self._slots.release()
        if not connection.reusable or self._closed or self._idle_count >= self._limit:
            self._drop(connection)
            return
        key = connection.key
        queue = self._idle.get(key)
        if queue is None:
            queue = self._idle[key] = deque()
        queue.append((connection, time.monotonic()))
        self._idle_count += 1
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE, self._sweep)

    def close(self) -> None:
        """Close every connection, idle or in use (a request still on one then fails as disconnected)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._all):
            self._drop(connection)
        self._idle.clear()
        self._idle_count = 0

    def _drop(self, connection: Connection) -> None:
        connection.close()
        self._all.discard(connection)

    def _sweep(self) -> None:
        """Close idle connections past their keep-alive, so a subscriber gone quiet holds no socket."""
        self._sweeper = None
        now = time.monotonic()
        for key in list(self._idle):
            queue = self._idle[key]
            while queue and (queue[0][0].closed or now - queue[0][1] >= KEEPALIVE):
                self._drop(queue.popleft()[0])
                self._idle_count -= 1
            if not queue:
                del self._idle[key]
        if self._idle_count:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE, self._sweep)

    def _evict_one(self) -> None:
        """Make room for a new connection: the oldest idle one of the first origin that has one goes."""
        for key, queue in self._idle.items():
            if queue:
                self._drop(queue.popleft()[0])
                self._idle_count -= 1
                if not queue:
                    del self._idle[key]
                return

    async def _vetted(self, host: str, port: int) -> list[str]:
        """``host``'s addresses through `AddressPolicy.resolve` (all vetted, or `ForbiddenDestination`), kept for
        `DNS_TTL` so a burst of new connections makes one lookup."""
        now = time.monotonic()
        known = self._addresses.get((host, port))
        if known is not None and known[0] > now:
            return known[1]
        try:
            addresses = await self._policy.resolve(host, port)
        except OSError as exc:
            raise LookupFailed(exc) from exc
        if len(self._addresses) >= DNS_CACHE:
            self._addresses.clear()
        self._addresses[(host, port)] = (now + DNS_TTL, addresses)
        return addresses

    async def _connect(self, target: Target) -> Connection:
        addresses = [target.host] if target.literal else await self._vetted(target.host, target.port)
        if self._busy + self._idle_count >= self._limit:
            self._evict_one()
        infos: list[AddrInfoType] = [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (address, target.port),
            )
            for address in addresses
        ]
        try:
            # Exactly the vetted addresses, no lookup of its own; a name with several is raced as aiohttp raced
            # them (RFC 8305: the next address 0.25 s after the last, families interleaved), so an unreachable
            # IPv6 address does not hold the attempt until its deadline. uvloop may raise RuntimeError here.
            sock = await start_connection(infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY)
        except (OSError, RuntimeError) as exc:
            raise ConnectFailed(exc) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the request goes in one write
            connection = await self._handshake(sock, target)
        except OSError as exc:
            raise ConnectFailed(exc) from exc
        connection.key = target.key
        self._all.add(connection)
        return connection

    async def _handshake(self, sock: socket.socket, target: Target) -> Connection:
        """The connected socket as a transport with its protocol, after the TLS handshake for https."""
        loop = asyncio.get_running_loop()
        try:
            if not target.tls:
                _, connection = await loop.create_connection(Connection, sock=sock)
                return connection
            if self._ssl is None:
                # Made once, at the first https URL: loading the CA store costs milliseconds.
                self._ssl = ssl.create_default_context()
            # The certificate must name the URL's host, not the address connected to.
            hostname = target.host.rstrip(".")
            _, connection = await loop.create_connection(Connection, sock=sock, ssl=self._ssl, server_hostname=hostname)
            return connection
        except BaseException:
            sock.close()
            raise
