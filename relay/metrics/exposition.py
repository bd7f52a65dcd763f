"""What /metrics renders: the process's (or every worker's) metrics plus gauges read from the store at scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from relay.metrics.counters import Metrics


class StoreCollector(Collector):
    """Gauges read from the database at scrape time, so they are right after a restart and across workers."""

    def __init__(
        self,
        read: Callable[[], Mapping[str, object]],
        clock: Callable[[], datetime],
        on_subscribers: Callable[[Iterable[str]], None] | None = None,
        size_limit: int | None = None,
    ) -> None:
        self._read = read
        #: RELAY_MAX_DB_SIZE, exported so the alert compares the used bytes with it (None: no bound, no gauge).
        self._size_limit = size_limit
        self._clock = clock
        #: Told the current subscriber names at every scrape (`exposition_registry` wires it to the metrics).
        self.on_subscribers = on_subscribers
        #: The subscriber names the last scrape found (what `LiveSubscribersOnly` keeps).
        self.live: frozenset[str] = frozenset()

    def collect(self) -> Iterable[Metric]:
        stats = self._read()
        now = self._clock()
        self.live = frozenset(stats["subscribers"])  # type: ignore[call-overload]
        if self.on_subscribers is not None:
            self.on_subscribers(self.live)
        depth = GaugeMetricFamily(
            "relay_outbox_deliveries",
            "Deliveries in the outbox, by state. A subscriber with a filter: its deliveries without a row counted up to"
            " 10,000 (a floor), read again every 30 s (up to 30 s old).",
            labels=["state"],
        )
        oldest = GaugeMetricFamily(
            "relay_outbox_oldest_age_seconds",
            "Age of the oldest unfinished delivery, by state (0 when there is none; a filtered subscriber's, as read"
            " up to 30 s ago).",
            labels=["state"],
        )
        for state, (count, first) in stats["outbox"].items():  # type: ignore[attr-defined]
            depth.add_metric([state], count)
            if state in ("pending", "in_flight"):
                oldest.add_metric([state], (now - first).total_seconds() if first else 0.0)
        subscribers = GaugeMetricFamily(
            "relay_subscriber_state", "1 for the state each subscriber is in.", labels=["subscriber", "state"]
        )
        for name, state in stats["subscribers"].items():  # type: ignore[attr-defined]
            for candidate in ("enabled", "paused", "disabled"):
                subscribers.add_metric([name, candidate], 1.0 if state == candidate else 0.0)
        size = GaugeMetricFamily(
            "relay_store_database_size_bytes",
            "Database size: the SQLite file with its WAL, or the PostgreSQL database.",
        )
        size.add_metric([], float(stats["size"]))  # type: ignore[arg-type]
        used = GaugeMetricFamily(
            "relay_store_used_bytes", "Database size less the free pages new rows reuse: what RELAY_MAX_DB_SIZE bounds."
        )
        used.add_metric([], float(stats["size"]) - float(stats.get("reusable") or 0))  # type: ignore[arg-type]
        yield from (depth, oldest, subscribers, size, used, *_retention(stats), *_confirming(stats, now))
        if self._size_limit is not None:
            limit = GaugeMetricFamily("relay_store_size_limit_bytes", "RELAY_MAX_DB_SIZE (absent: no bound).")
            limit.add_metric([], float(self._size_limit))
            yield limit


def _confirming(stats: Mapping[str, object], now: datetime) -> Iterable[Metric]:
    """Jobs of callbacks waiting for COS to confirm them (sources with confirm = true), per source."""
    waiting = GaugeMetricFamily(
        "relay_cos_confirm_waiting", "Jobs of callbacks waiting for COS to confirm them.", labels=["source"]
    )
    oldest = GaugeMetricFamily(
        "relay_cos_confirm_oldest_waiting_seconds",
        "How long the oldest job waiting for COS to confirm it has waited (absent: none waits).",
        labels=["source"],
    )
    for source, (count, first) in stats.get("confirming", {}).items():  # type: ignore[attr-defined]
        waiting.add_metric([source], count)
        oldest.add_metric([source], (now - first).total_seconds())
    yield from (waiting, oldest)


def _retention(stats: Mapping[str, object]) -> Iterable[Metric]:
    """Room left, and whether pruning keeps up: read at scrape like the rest, so right across workers and CLI runs.

    A gauge whose value the backend cannot tell (None: PostgreSQL's free space) is left out, not exported as 0.
    """
    room = (
        (
            "relay_store_reusable_bytes",
            "Free pages inside the database file: new rows take them before it grows.",
            "reusable",
        ),
        (
            "relay_store_filesystem_free_bytes",
            "Space left for unprivileged users on the database's filesystem.",
            "filesystem_free",
        ),
    )
    for name, documentation, key in room:
        value = stats.get(key)
        if value is not None:
            gauge = GaugeMetricFamily(name, documentation)
            gauge.add_metric([], float(value))  # type: ignore[arg-type]
            yield gauge
    pruned = GaugeMetricFamily(
        "relay_prune_last_success_timestamp_seconds", "When a prune batch last committed (0: never)."
    )
    at = stats["pruned_at"]
    pruned.add_metric([], at.timestamp() if isinstance(at, datetime) else 0.0)
    yield pruned


class LiveSubscribersOnly(Collector):
    """Every worker's metrics (multiprocess mode) without the series of removed subscribers.

    Workers count into files that nothing can take a series out of, so removed subscribers are
    left out here, by the names the store collector (collected first) last found.
    """

    def __init__(self, store: StoreCollector, multiprocess_dir: Path) -> None:
        self._store = store
        self._workers = MultiProcessCollector(None, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        live = self._store.live
        for family in self._workers.collect():  # type: ignore[no-untyped-call]
            family.samples = [
                sample
                for sample in family.samples
                if "subscriber" not in sample.labels or sample.labels["subscriber"] in live
            ]
            yield family


def exposition_registry(
    metrics: Metrics, collector: StoreCollector, multiprocess_dir: Path | None = None
) -> CollectorRegistry:
    """The registry /metrics renders: this process's metrics, or every worker's in ``multiprocess_dir``.

    Also tells ``metrics`` about the subscribers each scrape finds, so their give-up and disable
    counters are exported at 0 before the first give-up (an alert on increase() sees the first one),
    and the series of removed ones are dropped.
    """
    if collector.on_subscribers is None:
        collector.on_subscribers = metrics.subscribers_live
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        registry.register(collector)  # first: it reads which subscribers are live
        registry.register(LiveSubscribersOnly(collector, multiprocess_dir))
        return registry
    registry = metrics.registry
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
