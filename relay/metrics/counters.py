"""Prometheus metrics: what happened (counters, histograms); `relay.metrics.exposition` adds what the database holds.

Labels are bounded by construction: outcomes and states are fixed sets, Tags outside the known list
count as ``other``, only the first few QueueIds get their own label, and ``subscriber`` is a
configured name. Never a JobId, URL, object key or error text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from relay import __version__
from relay.domain.callback import JobState, WorkflowRun
from relay.domain.retention import KINDS

#: Tag families, from the COS API each Tag belongs to. Unknown Tags are counted as ``other``.
_MEDIA_TAGS = """Transcode Animation Snapshot SmartCover Concat VoiceSeparate VideoMontage SDRtoHDR VideoProcess
SuperResolution Segment DigitalWatermark ExtractDigitalWatermark VideoTag MediaInfo StreamExtract QualityEstimate Tts
NoiseReduction VideoEnhance VideoTargetRec TranscodePro GeneratePlayList FillConcat VideoSynthesis DNA SplitVideoParts
SegmentVideoBody ImageOCR"""
TAG_FAMILIES: Mapping[str, str] = {
    **dict.fromkeys(_MEDIA_TAGS.split(), "media"),
    **dict.fromkeys(("SpeechRecognition", "SoundHound", "VocalScore"), "speech"),
    **dict.fromkeys(("DocProcess", "DocWatermark", "DocAIGCMetadata"), "document"),
    **dict.fromkeys(("PicProcess", "PosterProduction", "ImageInspect"), "pic"),
    **dict.fromkeys(("Translation", "WordsGeneralize"), "ai"),
}
#: Every ``outcome`` a callback can have: the two successes, then the ``outcome`` of each refusal in
#: `relay.domain.errors` the callback endpoint raises (401, 408, 413, 415, 400, 422, 503).
CALLBACK_OUTCOMES = (
    "accepted",
    "duplicate",
    "unauthorized",
    "timeout",
    "too_large",
    "unsupported_type",
    "malformed",
    "invalid",
    "unavailable",
    "throttled",
    "size_bound",
)
#: The token checks that count wrong tokens per source address and throttle guessing (`relay.http.auth.Guessing`).
TOKEN_CHECKS = ("login", "bearer", "callback", "metrics")
#: Every ``kind`` `relay.store.sqlite.writer.error_kind` gives a failed write transaction.
WRITE_ERROR_KINDS = ("locked", "busy", "readonly", "full", "io", "other")
#: Why a delivery is given up, and why the gateway disables a subscriber (see the delivery worker).
GIVEN_UP_REASONS = ("retries_exhausted", "backlog_full")
DISABLED_REASONS = ("gone", "failing")
#: COS has one queue per feature, so a handful of QueueIds is normal; past this, the rest is ``other``.
MAX_QUEUE_LABELS = 10

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
# Media jobs take seconds to hours.
_JOB_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
_LATE_SECONDS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)
_ATTEMPT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120)
# Retries span hours and days.
_E2E_SECONDS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 7200, 18000, 36000, 86400, 259200)


def tag_labels(tag: str) -> tuple[str, str]:
    """(family, tag) with unknown Tags folded into ``other``."""
    family = TAG_FAMILIES.get(tag)
    return (family, tag) if family else ("other", "other")


class Metrics:
    """Every metric cos-relay records, registered in the given registry (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, documentation, labels, namespace="relay", registry=registry)

        def histogram(name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, documentation, labels, namespace="relay", registry=registry, buckets=buckets)

        self.build_info = Gauge(
            "build_info",
            "cos-relay build; always 1.",
            ["version"],
            namespace="relay",
            registry=registry,
            multiprocess_mode="max",
        )
        self.build_info.labels(__version__).set(1)
        self.callbacks = counter("callbacks_received", "Callbacks received, by outcome.", ("outcome",))
        self.ack_seconds = histogram(
            "callback_ack_duration_seconds",
            "Time from request start to the answer, durable commit included.",
            ("outcome",),
            _LATENCY,
        )
        self.body_bytes = histogram("callback_body_size_bytes", "Size of callback bodies that were read.", (), _SIZE)
        self.previous_callback_token = counter(
            "callback_previous_token", "Callbacks let in by the previous callback token, in a rotation's grace."
        )
        self.job_states = counter(
            "job_states", "New job states recorded, by Tag family, Tag and State.", ("family", "tag", "state")
        )
        self.queue_states = counter(
            "job_states_by_queue", "New job states recorded, by QueueId and State.", ("queue_id", "state")
        )
        self.workflows = counter("workflow_executions", "New workflow execution states recorded.", ("state",))
        self.nonexistent = counter("nonexistent_job_ids", "Job ids COS reported as NonExistJobIds.")
        self.processing_seconds = histogram(
            "job_processing_seconds",
            "COS processing time of finished jobs: CreationTime to EndTime.",
            ("family",),
            _JOB_SECONDS,
        )
        self.lateness_seconds = histogram(
            "callback_lateness_seconds",
            "How late callbacks arrive: job EndTime to our receipt.",
            ("family",),
            _LATE_SECONDS,
        )
        self.attempts = counter(
            "delivery_attempts", "Delivery attempts, by subscriber and outcome class.", ("subscriber", "outcome")
        )
        self.attempt_seconds = histogram(
            "delivery_attempt_duration_seconds", "Duration of one delivery attempt.", ("subscriber",), _ATTEMPT_SECONDS
        )
        self.e2e_seconds = histogram(
            "delivery_e2e_latency_seconds",
            "Time from receiving the callback to the subscriber's first 2xx.",
            ("subscriber",),
            _E2E_SECONDS,
        )
        self.given_up = counter(
            "deliveries_given_up", "Deliveries that will not be attempted again.", ("subscriber", "reason")
        )
        self.disabled = counter("subscribers_disabled", "Subscribers the gateway disabled.", ("subscriber", "reason"))
        self.write_seconds = histogram(
            "store_write_duration_seconds",
            "Duration of one SQLite write transaction (a group commit of one or more writes).",
            (),
            _LATENCY,
        )
        self.write_errors = counter("store_write_errors", "Failed SQLite write transactions, by kind.", ("kind",))
        self.wrong_tokens = counter(
            "wrong_tokens", "Wrong tokens sent, by check (console login, admin bearer, callback, metrics).", ("check",)
        )
        self.throttled = counter(
            "token_guesses_throttled",
            "Requests answered 429 because their source address sent too many wrong tokens, by check.",
            ("check",),
        )
        self.pruned_rows = counter("pruned_rows", "Rows removed by retention, by kind.", ("kind",))

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, ["source"], namespace="relay", registry=registry, multiprocess_mode="max")

        self.reconcile_runs = counter(
            "cos_reconcile_runs",
            "Reconciliations of a COS source, by outcome (ok, or how COS failed: signature, throttled, ...).",
            ("source", "outcome"),
        )
        self.missed_callbacks = counter(
            "cos_missed_callbacks", "Final job states a reconciliation found that no callback had brought.", ("source",)
        )
        self.jobs_in_flight = gauge("cos_jobs_in_flight", "Jobs COS has not finished, as the last reconciliation saw.")
        self.oldest_in_flight = gauge(
            "cos_oldest_in_flight_seconds", "How long ago the oldest job COS has not finished was created."
        )
        self.queue_here = Gauge(
            "cos_queue_callback_here",
            "1 when a COS queue's callback is on and points at this gateway (RELAY_PUBLIC_URL), else 0.",
            ["source", "queue"],
            namespace="relay",
            registry=registry,
            multiprocess_mode="max",
        )
        self.last_reconcile = gauge(
            "cos_last_reconcile_timestamp_seconds", "When this replica last reconciled the source with success."
        )
        self.confirmed = counter(
            "cos_confirmed",
            "Jobs of callbacks that COS confirmed (read back in the same state): released.",
            ("source",),
        )
        self.unconfirmed = counter(
            "cos_unconfirmed",
            "Jobs of callbacks COS did not confirm, held for good, by why (nonexistent, state_differs).",
            ("source", "reason"),
        )
        self.confirm_failures = counter(
            "cos_confirm_failures",
            "Reads of jobs back from COS that failed (the jobs keep waiting), by how (signature, throttled, ...).",
            ("source", "kind"),
        )
        self._per_subscriber: tuple[Counter | Histogram, ...] = (
            self.attempts,
            self.attempt_seconds,
            self.e2e_seconds,
            self.given_up,
            self.disabled,
        )
        self._queues: set[str] = set()
        self._subscribers: set[str] = set()
        # Counters that alerts and panels read with increase()/rate() exist at 0 from the start: a series
        # born at 1 has no earlier sample, so increase() would miss the first refusal, write error or give-up.
        for outcome in CALLBACK_OUTCOMES:
            self.callbacks.labels(outcome)
        for kind in WRITE_ERROR_KINDS:
            self.write_errors.labels(kind)
        for kind in KINDS:
            self.pruned_rows.labels(kind)
        for check in TOKEN_CHECKS:
            self.wrong_tokens.labels(check)
            self.throttled.labels(check)

    def subscribers_known(self, names: Iterable[str]) -> None:
        """Start each subscriber's give-up and disable counters at 0 (idempotent; every attempt calls it)."""
        for name in names:
            if name in self._subscribers:
                continue  # every attempt reports its subscriber: only the first costs anything
            self._subscribers.add(name)
            for reason in GIVEN_UP_REASONS:
                self.given_up.labels(name, reason)
            for reason in DISABLED_REASONS:
                self.disabled.labels(name, reason)

    def subscribers_live(self, names: Iterable[str]) -> None:
        """The subscribers that exist now (read at every scrape): start new ones' counters at 0, and drop
        every series of the ones removed, so the exposition neither names them nor grows with churn."""
        live = set(names)
        for name in self._subscribers - live:
            for metric in self._per_subscriber:
                metric.remove_by_labels({"subscriber": name})
        self._subscribers &= live
        self.subscribers_known(live)

    # -- ingest -----------------------------------------------------------------------------------

    def callback(self, outcome: str, seconds: float, size: int | None) -> None:
        self.callbacks.labels(outcome).inc()
        self.ack_seconds.labels(outcome).observe(seconds)
        if size is not None:
            self.body_bytes.observe(size)

    def job(self, job: JobState, received_at: datetime) -> None:
        family, tag = tag_labels(job.tag)
        self.job_states.labels(family, tag, job.state).inc()
        self.queue_states.labels(self._queue_label(job.queue_id), job.state).inc()
        end = job.end_time.utc if job.end_time else None
        created = job.creation_time.utc if job.creation_time else None
        if end and created and end >= created:
            self.processing_seconds.labels(family).observe((end - created).total_seconds())
        if end:
            self.lateness_seconds.labels(family).observe(max(0.0, (received_at - end).total_seconds()))

    def _queue_label(self, queue_id: str | None) -> str:
        if queue_id is None:
            return "none"
        if queue_id in self._queues or len(self._queues) < MAX_QUEUE_LABELS:
            self._queues.add(queue_id)
            return queue_id
        return "other"

    def workflow(self, run: WorkflowRun) -> None:
        self.workflows.labels(run.state).inc()

    # -- delivery ---------------------------------------------------------------------------------

    def attempt(self, subscriber: str, outcome: str, seconds: float) -> None:
        self.subscribers_known((subscriber,))
        self.attempts.labels(subscriber, outcome).inc()
        self.attempt_seconds.labels(subscriber).observe(seconds)

    # -- store ------------------------------------------------------------------------------------

    def pruned(self, counts: Mapping[str, int]) -> None:
        for kind, count in counts.items():
            if count:
                self.pruned_rows.labels(kind).inc(count)

    def dropped(self, counts: Mapping[str, int]) -> None:
        """Deliveries dropped because their subscriber's backlog was full: given up, like dead ones."""
        self.subscribers_known(counts)
        for subscriber, count in counts.items():
            self.given_up.labels(subscriber, "backlog_full").inc(count)

    def transaction(self, seconds: float, error: str | None) -> None:
        if error is None:
            self.write_seconds.observe(seconds)
        else:
            self.write_errors.labels(error).inc()
