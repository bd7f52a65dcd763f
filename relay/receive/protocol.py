"""uvicorn's HTTP protocol with a deadline for every phase of a connection and a bounded request head.

uvicorn alone times out only idle keep-alive connections, and cancels even that on any incoming byte: a client
that sends a request the app answers without reading its body (401, 404, 405, /healthz), then one more body byte,
holds the connection forever. It also buffers a request head of any size, at a cost that grows with its square.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from typing import Any, Literal

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from relay.receive.capacity import ConnectionCap

KIB = 1024

#: What a connection is doing, each with its own deadline (none while the app works on a complete request):
#: ``head`` a request head is expected or arriving; ``body`` its body is; ``unread`` the answer is sent but the
#: body it did not need is still coming; ``app`` the app works; ``idle`` between requests (keep-alive).
Phase = Literal["head", "body", "unread", "app", "idle"]

#: Phases in which a connection has no request in progress, so it may give way to a new connection.
_DISPLACEABLE: frozenset[Phase] = frozenset({"head", "unread", "idle"})

#: How long the rest of a body the app did not read may keep coming after the answer. Reading it (and dropping
#: it) rather than closing at once lets a client still sending its body read the answer instead of a reset.
UNREAD_LINGER = 2.0
#: The protocol's body deadline comes this long after the app's own (the callback endpoint answers 408 itself,
#: with its log line and metrics); it catches the routes that have none.
BODY_GRACE = 1.0

#: SO_LINGER on, zero seconds: closing resets the connection and discards unsent data.
_RESET = struct.pack("ii", 1, 0)

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    #: A request head must be complete this many seconds after its first byte (or after the connection opened).
    head_timeout: float = 10.0
    #: A request body must be complete this many seconds after its head (plus `BODY_GRACE`).
    body_timeout: float = 10.0
    #: An idle keep-alive connection is closed after this many seconds without a new request.
    keepalive_timeout: float = 5.0
    #: A client that takes none of an answer for this many seconds (its window and our buffer full) is cut off.
    send_timeout: float = 10.0
    #: The largest request head (request line and headers), in bytes.
    max_head: int = 64 * KIB
    #: The longest request line (the URL) or header line (name and value), in bytes.
    max_line: int = 8 * KIB


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head past its limits."""


class BoundedProtocol(HttpToolsProtocol):
    """One HTTP connection, bounded in time in every phase and in the size of each request head, and counted
    in ``cap`` (when given) so that it can give way to a new connection while it has no request in progress."""

    def __init__(
        self, *args: Any, limits: ConnectionLimits | None = None, cap: ConnectionCap | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits or ConnectionLimits()
        self._cap = cap
        self._phase: Phase = "head"
        self._deadline: asyncio.TimerHandle | None = None
        #: Armed while writing is paused: the app's send waits for the client, which must resume reading in time.
        self._send_deadline: asyncio.TimerHandle | None = None
        #: A request head is expected or arriving (true from the start: the first request is expected).
        self._in_head = True
        #: The current request's head arrived and its body has not ended yet.
        self._body_pending = False
        #: Bytes of the current request's first byte arrived.
        self._began = False
        #: Head bytes fed to the parser since the last complete head.
        self._head_bytes = 0
        self._head_too_large = False

    # -- connection events ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._limits.head_timeout)
        if self._cap is not None:
            self._cap.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_send()
        if self._cap is not None:
            self._cap.closed(self)
        super().connection_lost(exc)

    def displace(self) -> None:
        """Close to make room for a new connection (called only while no request is in progress)."""
        self._disarm()
        self._close()

    def data_received(self, data: bytes) -> None:
        # Fed in pieces no larger than what is left of the head limit, so a head past it is refused before the
        # parser has buffered it (httptools concatenates a header's pieces: the cost would grow quadratically).
        self._unset_keepalive_if_required()
        while data and not self.transport.is_closing():
            if self._body_pending:
                piece, data = data, b""
            else:
                room = self._limits.max_head - self._head_bytes
                if room <= 0:
                    self._refuse_head()
                    return
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)  # reset when a head completes within it
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                # No WebSocket routes (ws="none"): the request was answered as an ordinary one. uvicorn would log
                # two warnings for each such request, a log flood anyone can cause.
                return
            except httptools.HttpParserError:
                if self._head_too_large:
                    self._refuse_head()
                else:
                    message = "Invalid HTTP request received."
                    self.logger.warning(message)
                    self.send_400_response(message)
                return

    def pause_writing(self) -> None:
        super().pause_writing()
        # Writing pauses in the "app" phase, which has no deadline of its own: without this, a client that
        # pipelines requests and never reads the answers holds the connection (and a cap slot) forever.
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self._limits.send_timeout, self._reset)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm_send()

    def _disarm_send(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    # -- parser callbacks -------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began = True
        self._in_head = True
        self._settle()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self._limits.max_line:
            self._head_too_large = True
            raise HeadTooLarge("request line")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > self._limits.max_line:
            self._head_too_large = True
            raise HeadTooLarge("header line")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._began = False
        self._body_pending = True
        self._head_bytes = 0
        super().on_headers_complete()
        self._settle()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._body_pending = False
        self._settle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer, which any incoming byte cancels for good; the idle deadline
        # here replaces it and only a new request ends it.
        self._unset_keepalive_if_required()
        if not self.transport.is_closing():
            self._settle()

    # -- deadlines --------------------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Enter the phase the connection is now in; staying in the same phase keeps its deadline running."""
        phase: Phase
        if self._in_head:
            phase = "head"
        elif self._body_pending:
            phase = "unread" if self.cycle is not None and self.cycle.response_complete else "body"
        elif self.cycle is not None and not self.cycle.response_complete:
            phase = "app"
        else:
            phase = "idle"
        if phase == self._phase:
            return
        self._phase = phase
        self._disarm()
        limits = self._limits
        timeouts = {
            "head": limits.head_timeout,
            "body": limits.body_timeout + BODY_GRACE,
            "unread": UNREAD_LINGER,
            "idle": limits.keepalive_timeout,
        }
        if phase in timeouts:
            self._arm(timeouts[phase])
        if self._cap is not None:
            if phase in _DISPLACEABLE:
                self._cap.waiting(self)
            else:
                self._cap.busy(self)

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        # 408 to a request that began; a connection that never sent a byte is just closed (as nginx does).
        if (self._phase == "head" and self._began) or self._phase == "body":
            self._answer(_TIMED_OUT)
        self._close()

    # -- refusing ---------------------------------------------------------------------------------------------

    def _refuse_head(self) -> None:
        self._answer(_TOO_LARGE)
        self._close()

    def _answer(self, response: bytes) -> None:
        """Send a final answer of our own, unless the app's answer to this or an earlier request is under way."""
        cycle = self.cycle
        if self.pipeline:
            return
        if self._phase == "body":
            if cycle is None or cycle.response_started:
                return
            # The app, still waiting for this body, sees a disconnect and its own answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete:
            return  # a head arriving behind a request the app is still answering
        self.transport.write(response)

    def _close(self) -> None:
        # A peer that has not read what was sent by the deadline loses it: close() would wait for it forever.
        if self.transport.get_write_buffer_size():
            self._reset()
        else:
            self.transport.close()

    def _reset(self) -> None:
        """Drop the connection and what it still had to send, in the kernel too (a reset, not a FIN queued
        behind megabytes the peer will never read)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.transport.abort()
