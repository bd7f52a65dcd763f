"""One keep-alive connection and the response read off it: httptools' C parser fed straight from the transport.

A connection carries one request at a time (no pipelining). Its response ends in one of four ways, and only the
first leaves the connection fit for another request:

- complete, and the server did not say ``Connection: close`` (nor spoke HTTP/1.0 without keep-alive);
- complete but closing, or ended by the close itself (a body without Content-Length or chunking);
- cut at the body limit: more body came than is kept, and it is never drained;
- failed: the peer closed or reset too early, or sent something that is not HTTP.
"""

from __future__ import annotations

import asyncio
from typing import cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

#: The headers that give a body an end other than the connection's close.
_FRAMING = frozenset((b"content-length", b"transfer-encoding"))
#: What a response may carry besides its body (status line, headers, chunk framing, trailers, interim answers):
#: past this it is refused, so a subscriber that sends headers without end cannot grow the gateway's memory until
#: the deadline (the receiving side caps a request's head at 64 KiB too).
MAX_HEAD = 64 * 1024


class ResponseFailed(Exception):
    """The response could not be read; `label` is the secret-free error kept with the attempt."""

    label = "ResponseFailed"


class ServerDisconnected(ResponseFailed):
    """The connection closed before a status line came (often an idle keep-alive connection the server dropped)."""

    # The names aiohttp gave these failures, so attempts' errors read as they did before this client.
    label = "ServerDisconnectedError"


class ConnectionLost(ServerDisconnected):
    """The connection was reset (or failed otherwise) before a status line came."""

    label = "ClientOSError"


class IncompleteBody(ResponseFailed):
    """The connection closed in the middle of a body whose length was announced (Content-Length or chunked)."""

    label = "ClientPayloadError"


class MalformedResponse(ResponseFailed):
    """The bytes are not an HTTP/1.x response."""

    label = "ClientResponseError"


class HeadTooLarge(MalformedResponse):
    """More than `MAX_HEAD` bytes of a response were not its body (aiohttp refused over-long lines, under the same
    name)."""


class Connection(asyncio.Protocol):
    """An asyncio protocol, and httptools' callbacks for the response in progress."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        #: The origin (scheme, host, port) the pool keeps it under.
        self.key: tuple[str, str, int] = ("", "", 0)
        #: Set once the transport is gone; an idle connection so marked is never handed out again.
        self.closed = False
        #: Requests sent on it so far, the one in progress included.
        self.requests = 0
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.error: ResponseFailed | None = None
        #: The final response ended by its framing, not by the body limit nor by an error.
        self.complete = False
        self._keep_alive = False
        self._parser: HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._chunks: list[bytes] = []
        self._room = 0
        self._over = False
        self._framed = False
        #: Bytes fed to the parser, and of them the body's (kept or not): the rest is the head's.
        self._fed = 0
        self._body_seen = 0
        #: The final response ended (whole, cut or failed): what the parser reads after it is not this request's.
        self._ended = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser, waiter = self._parser, self._waiter
        if parser is None or waiter is None or waiter.done():
            # Bytes nobody asked for: this connection's framing can no longer be trusted.
            self.close()
            return
        self._fed += len(data)
        try:
            parser.feed_data(data)
        except HttpParserUpgrade:
            # A 101 (or any upgrade) ends the HTTP part: the answer is its head, the connection is not reusable.
            self._keep_alive = False
            self._end(complete=self.status is not None)
            return
        except HttpParserError:
            self._fail(MalformedResponse())
            return
        if waiter.done():
            return
        if self._over or (self._room == 0 and self._chunks):
            # The body went past the limit, or filled it and goes on: keep what fits, never drain the rest.
            self._end(complete=False)
        elif self._fed - self._body_seen > MAX_HEAD:
            self._fail(HeadTooLarge())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._keep_alive = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self.status is None:
            self._fail(ServerDisconnected() if exc is None else ConnectionLost())
        elif self._framed:
            self._fail(IncompleteBody())
        else:
            self._end(complete=True)  # a body delimited by the close: this close is its end

    # --- one response -------------------------------------------------------------------------------------

    def send(self, request: bytes, body_limit: int) -> asyncio.Future[None]:
        """Write ``request`` and expect its response, keeping at most ``body_limit`` bytes of the body; the future
        is done when the response ended (see `error`, `complete`, `reusable`)."""
        self._parser = HttpResponseParser(self)
        self.status, self.headers, self.error, self.complete, self._ended = None, [], None, False, False
        self._keep_alive, self._chunks, self._room, self._over, self._framed = False, [], body_limit, False, False
        self._fed = self._body_seen = 0
        self.requests += 1
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            # The server dropped it between its last response and now: fail at once, not at the deadline
            # (and uvloop raises on a write to a closed transport).
            self._fail(ServerDisconnected())
        else:
            transport.write(request)
        return waiter

    @property
    def reused(self) -> bool:
        """Whether the request in progress is not the connection's first (it was kept alive for it)."""
        return self.requests > 1

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    @property
    def reusable(self) -> bool:
        """Whether another request may use this connection: its last response ended cleanly and keeps it, and the
        request is all written (a server may answer before it read the whole body)."""
        transport = self.transport
        return (
            self.complete
            and self._keep_alive
            and not self.closed
            and self.error is None
            and transport is not None
            and not transport.get_write_buffer_size()
        )

    def close(self) -> None:
        """Drop the connection without ceremony: nothing on it is worth flushing."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _end(self, *, complete: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self.complete, self._ended = complete, True
            waiter.set_result(None)

    def _fail(self, error: ResponseFailed) -> None:
        # Kept, not raised into the future: a request already given up (its deadline) would never retrieve it.
        self._keep_alive = False
        if self._waiter is not None and not self._waiter.done():
            self.error = error
            self._end(complete=False)

    # --- httptools callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._ended:  # a second response to one request: the stream is out of step
            self._keep_alive = False

    # After the final response, callbacks are a second response in the same read: not this request's.

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._ended:
            return
        self.headers.append((name, value))
        if name.lower() in _FRAMING:
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        if self._ended:
            return
        self.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self._ended:
            return
        self._body_seen += len(body)
        room = self._room
        if len(body) > room:
            self._over = True
            body = body[:room]
        if body:
            self._chunks.append(body)
            self._room = room - len(body)

    def on_message_complete(self) -> None:
        assert self._parser is not None
        if self._ended:
            return
        status = self.status
        if status is not None and 100 <= status < 200 and status != 101:
            # An interim answer (103 Early Hints, an unasked 100): the final one follows on the same stream.
            self.status, self.headers, self._framed = None, [], False
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._end(complete=not self._over)
