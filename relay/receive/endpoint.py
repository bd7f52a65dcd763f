"""``POST /cos/callback``: authenticate, read, validate, commit, and only then answer 200."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final

import anyio
import anyio.to_thread
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from relay.domain.callback import Callback, IngestResult, Received
from relay.domain.errors import (
    AtSizeBound,
    BodyTimeout,
    Rejected,
    Throttled,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedType,
)
from relay.domain.guessing import retry_after
from relay.http.auth import Guessing, Tokens, sole
from relay.http.errors import error_response, status_of
from relay.ingest import Ingest
from relay.logs import Throttle, clip
from relay.metrics.counters import Metrics
from relay.receive.body import body_format, read_body
from relay.receive.heap import releaser
from relay.settings.table import Settings
from relay.store import Store
from relay.store.failures import StoreError
from relay.validate import limits
from relay.validate.parse import BodyFormat, new_xml_parser

logger = logging.getLogger(__name__)

_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'
#: Refusals of one kind log at most one line per this many seconds (relay_callbacks_received_total counts
#: each): a client sending thousands of bad tokens a second must not fill the disk with lines.
REFUSAL_LOG_INTERVAL = 10.0


def source_address(request: Request) -> str | None:
    """The client's IP address, or None when what stands in for it is not one (an untrusted header's text)."""
    host = request.client.host if request.client else None
    if host is None:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


#: Bodies up to this size and node count are read on the event loop: a few milliseconds at most, and
#: cheaper there than the hop to a thread. Larger ones are read in a thread, so that other requests
#: go on meanwhile (lxml parses without the GIL; the Python walk shares it).
INLINE_BYTES: Final = 64 * 1024
INLINE_NODES: Final = 2_000


class CallbackEndpoint:
    """The Starlette endpoint COS posts to. Its collaborators are injected by the app factory."""

    def __init__(
        self,
        *,
        settings: Settings,
        tokens: Tokens,
        store: Store,
        ingest: Ingest,
        clock: Callable[[], datetime],
        metrics: Metrics,
        guessing: Guessing,
        on_commit: Callable[[], None] = lambda: None,
        at_bound: Callable[[], Awaitable[bool]] | None = None,
        on_accepted: Callable[[int], None] = lambda size: None,
    ) -> None:
        self._settings = settings
        self._guessing = guessing
        self._metrics = metrics
        #: Called when a callback logged events, to wake the delivery worker.
        self._on_commit = on_commit
        self._tokens = tokens
        #: Whether the database is at RELAY_MAX_DB_SIZE (the shedder's verdict): refuse before reading the body.
        self._at_bound = at_bound
        #: Told each committed body's size, so the size bound counts it before its next measurement.
        self._on_accepted = on_accepted
        self._store = store
        self._ingest = ingest
        self._clock = clock
        #: For bodies read on the event loop; each body read in a thread gets its own (not thread-safe).
        self._parser = new_xml_parser()
        self._refusal_log = Throttle(REFUSAL_LOG_INTERVAL)
        #: One large body is read at a time: a burst of them queues here instead of holding threads,
        #: the GIL and memory all at once.
        self._large = anyio.CapacityLimiter(1)
        self._release_heap = releaser()

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        received: Received | None = None
        large = False
        try:
            await self._authorize(request)
            if self._at_bound is not None and await self._at_bound():
                raise AtSizeBound("the database is at its size bound (RELAY_MAX_DB_SIZE); try again later")
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            body = await read_body(request, limit=self._settings.max_body, timeout=self._settings.body_timeout)
            received = Received(
                received_at=self._clock(),
                source_addr=source_address(request),
                content_type=request.headers.get("content-type"),
                body=body,
                format="unknown",
            )
            if encoding not in ("", "identity"):
                # COS sends plain bodies; decoding gzip would reopen the size cap to compression bombs.
                raise UnsupportedType(f"Content-Encoding {clip(encoding)!r} is not accepted")
            received = dataclasses.replace(received, format=body_format(received.content_type, body))
            large = is_large(body, received.format)  # type: ignore[arg-type]
            callback, result = await self._read_and_record(received, large)
        except Rejected as error:
            response = await self._refuse(error, received, large)
            size = len(received.body) if received is not None else None
            self._metrics.callback(error.outcome, time.perf_counter() - started, size)
            return response
        except ClientDisconnect:
            logger.info("client went away before the body arrived", extra={"action": "callback_disconnected"})
            return Response(status_code=400)
        if result.events and result.claimable:
            self._on_commit()
        self._on_accepted(len(received.body))
        self._metrics.callback(result.outcome, time.perf_counter() - started, len(received.body))
        self._count_items(callback, result, received.received_at)
        # Debug, not info: the callbacks table already records every callback and its outcome, and at
        # thousands a second a line each cost a tenth of the request's CPU. Refusals log at warning.
        logger.debug(
            "callback %s: %d new item(s)",
            result.outcome,
            len(result.new_items),
            extra={
                "action": "callback_" + result.outcome,
                "outcome": result.outcome,
                "callback_id": result.callback_id,
                "job_id": ",".join(job.job_id for job in callback.jobs) or None,
            },
        )
        return Response(
            _ACCEPTED if result.outcome == "accepted" else _DUPLICATE,
            media_type="application/json",
            background=self._after_large() if large else None,
        )

    def _after_large(self) -> BackgroundTask:
        """Once the answer is sent (and the body, tree and model are garbage), give the heap back."""
        return BackgroundTask(self._release_after_large)

    async def _release_after_large(self) -> None:
        await anyio.to_thread.run_sync(self._release_heap, limiter=self._large)

    def _count_items(self, callback: Callback, result: IngestResult, received_at: datetime) -> None:
        new = set(result.new_items)
        for job in callback.jobs:
            if job.dedup_key in new:
                self._metrics.job(job, received_at)
        for run in callback.workflows:
            if run.dedup_key in new:
                self._metrics.workflow(run)
        if callback.nonexistent_dedup_key in new:
            self._metrics.nonexistent.inc(len(callback.nonexistent_job_ids))

    async def _authorize(self, request: Request) -> None:
        # Before comparing: a throttled source gets 429 even with the right token, so it learns nothing.
        if wait := self._guessing.wait("callback", request):
            raise Throttled(wait)
        given = sole(request.query_params.getlist("token"))
        which = await self._tokens.callback(given)
        if which is None:
            if given:
                self._guessing.wrong("callback", request)
            raise Unauthorized()
        if which == "previous":
            # COS still posts to the URL from before a rotation: once this stops growing, it has switched.
            self._metrics.previous_callback_token.inc()

    async def _read_and_record(self, received: Received, large: bool) -> tuple[Callback, IngestResult]:
        if large:
            try:
                reading = await anyio.to_thread.run_sync(
                    self._ingest.reader.read, received, new_xml_parser(), limiter=self._large
                )
            except Rejected as error:
                # Raised across the thread, the refusal's traceback holds the worker's frames and the future
                # that holds the refusal: a cycle that kept the body and its tree alive until the next
                # garbage collection, which an idle server may never run.
                raise error.with_traceback(None) from None
        else:
            reading = self._ingest.reader.read(received, self._parser)
        return reading.callback, await self._ingest.record(received, reading)

    async def _refuse(self, error: Rejected, received: Received | None, large: bool) -> Response:
        quarantine_id = None
        if error.quarantined and received is not None:
            try:
                quarantine_id = await self._store.record_rejection(received, error, self._settings.quarantine_prefix)
            except StoreError:
                logger.exception("could not quarantine a rejected body", extra={"action": "quarantine_failed"})
        held = self._refusal_log.allow(error.outcome)
        if held is not None:
            logger.warning(
                "callback refused (%d %s): %s%s",
                status_of(error),
                error.outcome,
                clip(error.detail),
                f" ({held} more refused like this since the last line, not logged)" if held else "",
                extra={"action": "callback_refused", "outcome": error.outcome, "quarantine_id": quarantine_id},
            )
        headers = {}
        if isinstance(error, Unavailable):
            headers["Retry-After"] = "5"
        if isinstance(error, Throttled):
            headers["Retry-After"] = retry_after(error.retry_after)
        if isinstance(error, TooLarge | BodyTimeout | AtSizeBound):
            # The rest of the body is still coming (or never will): close rather than read it.
            headers["Connection"] = "close"
        background = self._after_large() if large else None
        return error_response(error, headers, background)


def is_large(body: bytes, fmt: BodyFormat) -> bool:
    """Whether reading ``body`` may take long enough to be worth a thread (see `INLINE_BYTES`)."""
    return len(body) > INLINE_BYTES or limits.nodes(body, fmt) > INLINE_NODES
