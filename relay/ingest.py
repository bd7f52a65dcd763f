"""THE ingest pipeline: a received body -> parse -> validate and convert -> callback model -> events ->
the log -> one store call. The endpoint, ``cos-relay validate``, bench, the fuzz target and
the tests all go through here; nothing else rebuilds it.

`Reader.read` is everything before storing (pure CPU, thread-safe given a parser per thread, so the
endpoint may run it in a worker thread for large bodies); `Ingest.record` makes the one store call. Which
subscribers an event is owed to is the log's (each subscriber's cursor and filter): ingest never reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio.to_thread
from lxml import etree

from relay.domain.callback import Callback, IngestResult, Received
from relay.domain.confirm import ConfirmScope, to_confirm
from relay.domain.errors import Invalid, Unavailable
from relay.domain.events import Event, events_for
from relay.store import Store
from relay.store.failures import StoreError
from relay.validate import limits
from relay.validate.callback import callback_from_document
from relay.validate.parse import BodyFormat, new_xml_parser, parse
from relay.validate.schema import CallbackSchema, SchemaViolation


@dataclass(frozen=True)
class Reading:
    """A body read and understood: its callback model and the events its items make."""

    callback: Callback
    #: One per item, new or not: the store keeps only those of items it had not seen.
    events: tuple[Event, ...]


def check_ownership(callback: Callback, buckets: frozenset[str]) -> None:
    """`Invalid` unless every job and run the callback names is in one of ``buckets`` (the configured COS
    sources'): anyone holding the callback token could otherwise invent results for buckets that are not ours.
    An item that names no bucket (document jobs may not) is let through: a source's ``confirm`` checks those."""
    for position, job in enumerate(callback.jobs, 1):
        if job.bucket is not None and job.bucket not in buckets:
            raise Invalid(
                f"bucket {job.bucket!r} belongs to no configured COS source",
                path=f"/Response/JobsDetail[{position}]/Input/BucketId",
                rule="ownership",
            )
    for run in callback.workflows:
        if run.bucket is not None and run.bucket not in buckets:
            raise Invalid(
                f"bucket {run.bucket!r} belongs to no configured COS source",
                path="/Response/WorkflowExecution/BucketId",
                rule="ownership",
            )


class Reader:
    """Reads callbacks: no store, no state. ``gateway`` names this gateway in every event's source; ``buckets``,
    when COS sources are configured, are theirs: a job or run of another bucket is refused (`Invalid`)."""

    def __init__(
        self, schema: CallbackSchema, *, gateway: str = "cos-relay", buckets: frozenset[str] | None = None
    ) -> None:
        self._schema = schema
        self._gateway = gateway
        self._buckets = buckets

    def check(self, body: bytes, fmt: BodyFormat, parser: etree.XMLParser, *, explain: bool = False) -> Callback:
        """Parse, validate and model one body, or raise the refusal (`Malformed`, `Invalid`, `TooComplex`).

        ``explain`` lists every schema violation in the `Invalid` (slow: for people, not the hot path).
        The parser is not thread-safe: give each thread its own.
        """
        root = parse(body, fmt, parser)
        try:
            document = self._schema.convert(root)
        except SchemaViolation as violation:
            first = violation.violations[0]
            reasons = tuple(self._schema.explain(root) or violation.violations) if explain else ()
            raise Invalid(
                "the body is not a valid COS callback",
                path=first.path,
                rule=first.rule,
                reasons=tuple((reason.path, reason.rule) for reason in reasons),
            ) from None
        callback = callback_from_document(document)
        limits.check_items(callback)
        if self._buckets is not None:
            check_ownership(callback, self._buckets)
        return callback

    def read(self, received: Received, parser: etree.XMLParser) -> Reading:
        """Everything between reading a body and storing it."""
        callback = self.check(received.body, received.format, parser)  # type: ignore[arg-type]
        events = events_for(callback, self._gateway, received.received_at, received.reconciled_from)
        return Reading(callback, tuple(events))


class Ingest:
    """Reads callbacks (`reader`) and records them in ``store``. The jobs of a COS source with ``confirm`` (its
    ``scopes``) wait for COS to confirm them before their events go out; ``on_hold`` is told when some do."""

    def __init__(
        self,
        store: Store,
        reader: Reader,
        scopes: Sequence[ConfirmScope] = (),
        on_hold: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self.reader = reader
        self._scopes = tuple(scopes)
        self._on_hold = on_hold
        #: For `ingest`, which runs on one thread (lxml parsers are not thread-safe).
        self._parser = new_xml_parser()

    async def record(self, received: Received, reading: Reading) -> IngestResult:
        """Store the callback and its new items' events in one transaction.

        Raises `Unavailable` when it could not be committed: never claim a callback is stored when it is not.
        """
        # What reconciliation found came from COS itself: nothing to confirm.
        confirm = to_confirm(reading.callback, self._scopes) if received.reconciled_from is None else ()
        try:
            result = await self._store.record_callback(received, reading.callback, reading.events, confirm)
        except StoreError as exc:
            raise Unavailable(f"the callback could not be stored ({type(exc).__name__})") from None
        if confirm and result.new_items and self._on_hold is not None:
            self._on_hold()
        return result

    async def ingest(self, received: Received) -> tuple[Callback, IngestResult]:
        """Read and record one body on the calling thread (the CLI, bench and tests)."""
        reading = self.reader.read(received, self._parser)
        return reading.callback, await self.record(received, reading)

    async def ingest_in_thread(self, received: Received) -> tuple[Callback, IngestResult]:
        """`ingest`, the body read in a worker thread: for bodies the event loop should not parse itself while it
        answers callbacks (a reconciled page of a hundred jobs)."""
        reading = await anyio.to_thread.run_sync(self.reader.read, received, new_xml_parser())
        return reading.callback, await self.record(received, reading)
