"""``GET /metrics``: an optional bearer token, and one rendering shared by the scrapes that come close together.

Rendering holds the GIL for as long as it takes (about 0.3 s with 1,000 subscribers' delivery series),
and every scrape used to render anew: four scrapers in a loop starved the event loop and the writer
thread, and callback acks went from milliseconds to seconds. A rendering is now reused for at least
``MIN_REUSE`` seconds, and for ``REUSE_FACTOR`` times as long as it took, so rendering never takes more
than a tenth of a core however often /metrics is asked; scrapes that arrive during a rendering wait for
it rather than start their own. Prometheus scrapes every 15 s or so: a figure a second or two old is
what it would have got a moment earlier anyway. Each rendering is also gzipped once, for the scrapers
that accept it (Prometheus does): sending megabytes per scrape kept the event loop busy too.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from typing import Protocol

import anyio
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay.domain.tokens import tokens_match

MIN_REUSE = 1.0
REUSE_FACTOR = 10.0


class SharedRendering:
    """The latest exposition, rendered again (off the event loop) only once it has been reused long enough."""

    def __init__(self, render: Callable[[], bytes], clock: Callable[[], float] = time.monotonic) -> None:
        self._render = render
        self._clock = clock
        self._body: tuple[bytes, bytes] | None = None  # plain, gzipped
        self._fresh_until = 0.0
        self._lock = anyio.Lock()

    async def get(self) -> tuple[bytes, bytes]:
        """The exposition, plain and gzipped."""
        async with self._lock:  # one rendering at a time; the scrapes queued behind it reuse it
            if self._body is None or self._clock() >= self._fresh_until:
                started = self._clock()
                self._body = await anyio.to_thread.run_sync(self._render_both)
                took = self._clock() - started
                self._fresh_until = self._clock() + max(MIN_REUSE, REUSE_FACTOR * took)
            return self._body

    def _render_both(self) -> tuple[bytes, bytes]:
        body = self._render()
        return body, gzip.compress(body, compresslevel=1)


class Guarding(Protocol):
    """What the endpoint asks of the guessing guard (relay.http.auth's `Guessing`, which counts into these
    metrics: a protocol here, so the two packages do not import each other)."""

    def wait(self, check: str, request: Request) -> float: ...

    def wrong(self, check: str, request: Request) -> None: ...

    def refusal(self, seconds: float) -> Response: ...


class MetricsEndpoint:
    """The Starlette endpoint. With ``token`` set, a scrape needs ``Authorization: Bearer <token>``:
    the exposition names every subscriber and shows traffic, which is nobody else's business."""

    def __init__(self, rendering: SharedRendering, token: str | None, guessing: Guarding | None = None) -> None:
        self._rendering = rendering
        self._token = token
        #: The token checks' guard against guessing (`relay.http.auth.Guessing`): the metrics token is one.
        self._guessing = guessing

    async def handle(self, request: Request) -> Response:
        if self._token is not None:
            if self._guessing is not None and (wait := self._guessing.wait("metrics", request)):
                return self._guessing.refusal(wait)
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not tokens_match(given.strip(), self._token):
                if given.strip() and self._guessing is not None:
                    self._guessing.wrong("metrics", request)
                return JSONResponse(
                    {"error": "unauthorized", "detail": "a valid metrics bearer token is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        plain, gzipped = await self._rendering.get()
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            return Response(gzipped, media_type=CONTENT_TYPE_LATEST, headers=headers)
        return Response(plain, media_type=CONTENT_TYPE_LATEST, headers={"Vary": "Accept-Encoding"})
