"""uvicorn's HTTP protocol with a deadline for request heads, which uvicorn itself never times out."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeadTimeoutProtocol(HttpToolsProtocol):
    """Cut off a connection whose request head (request line and headers) has not arrived ``head_timeout``
    seconds after the connection opened or the request began.

    The endpoint already answers 408 to a body that trickles (slowloris); without this, a client could
    open connections and trickle, or never send, the headers, holding each one forever.
    """

    def __init__(self, *args: Any, head_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = head_timeout
        self._head_deadline: asyncio.TimerHandle | None = None
        #: A request's first bytes arrived and its head is not complete yet.
        self._in_head = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._arm()  # a keep-alive connection's next request: its own deadline (unless one is running)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self._head_timeout, self._expire)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _expire(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        # 408 to a request that began; a connection that never sent a byte is just closed (as nginx does).
        # Never in the middle of another response.
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_TIMED_OUT)
        self.transport.close()
