"""Three worker processes on one database under load: no lock error reaches a client, no event lost or doubled."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

from relay.store.records import Target
from tests.chaos.harness import (
    ADMIN_HEADERS,
    Sender,
    column,
    gateway,
    intact,
    named,
    record,
    scalar,
    unfinished_deliveries,
)
from tests.conftest import job_id
from tests.live import wait_until
from tests.sink import Sink

CLIENTS = 4


def read_api_until(url: str, stop: threading.Event, statuses: Counter[str]) -> None:
    """Read the admin API and the probes while the writers are busy (readers must not fail either)."""
    paths = ("/api/jobs?limit=20", "/api/deliveries?limit=20", "/api/callbacks?limit=5", "/readyz", "/metrics")
    with httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=30) as client:
        for _ in range(100_000):
            if stop.wait(0.05):
                return
            for path in paths:
                try:
                    statuses[f"{path.split('?')[0]} {client.get(path).status_code}"] += 1
                except httpx.TransportError:
                    statuses[f"{path.split('?')[0]} transport error"] += 1


def test_three_workers_on_one_database_answer_only_200_or_503_and_deliver_each_event_exactly_once(
    database: Target, long_run: bool, sink: Sink
) -> None:
    recorder = subscriber = sink
    duration = 180.0 if long_run else 10.0
    db = database
    server = gateway(db, args=("--workers", "3"), env={"RELAY_RETRY_SCHEDULE": "0.5,1,1,1,1"}).start()
    stop = threading.Event()
    reads: Counter[str] = Counter()
    try:
        with httpx.Client(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as api:
            assert api.post("/api/subscribers", json={"name": "s", "url": f"{subscriber.url}/ok"}).status_code == 201
        reader = threading.Thread(target=read_api_until, args=(server.url, stop, reads), daemon=True)
        reader.start()
        # As fast as each client can go: the contention is the point.
        senders = [Sender(server.url, rate=1000, first=k * 10_000_000).start() for k in range(CLIENTS)]
        time.sleep(duration)
        for sender in senders:
            sender.stop()
        wait_until(lambda: unfinished_deliveries(db) == 0, timeout=120, what="every delivery delivered")
        stop.set()
        reader.join(timeout=30)
    finally:
        stop.set()
        # Counted once the workers have exited: an attempt sent twice has then arrived (a stop waits for the
        # attempts in flight), and none can come after.
        output = server.stop()

    statuses: Counter[int] = Counter()
    for sender in senders:
        statuses.update(sender.statuses)
    acknowledged = {job_id(number) for sender in senders for number in sender.acknowledged}
    stored = set(column(db, "SELECT job_id FROM jobs"))
    events = set(column(db, "SELECT id FROM events"))
    received = [request.webhook_id for request in recorder.to("/ok")]
    figures = {
        "seconds": duration,
        "workers": 3,
        "client_threads": CLIENTS,
        "callbacks_acknowledged": len(acknowledged),
        "callbacks_per_second": round(len(acknowledged) / duration, 1),
        "statuses": dict(sorted(statuses.items())),
        "not_acknowledged": sum(len(sender.unacknowledged) for sender in senders),
        "events": len(events),
        "delivered_distinct": len(set(received)),
        "delivery_requests": len(received),
        "duplicates": len(received) - len(set(received)),
        "attempts": scalar(db, "SELECT count(*) FROM attempts"),
        "api_reads": dict(sorted(reads.items())),
        "locked_in_log": output.count("database is locked"),
    }
    record(named("concurrency_long" if long_run else "concurrency", db), figures)

    assert set(statuses) <= {200, 503}, statuses
    assert not any(key.endswith((" 500", "transport error")) for key in reads), (
        reads
    )  # readers never see a lock error either
    assert all(len(sender.unacknowledged) == 0 for sender in senders)
    assert acknowledged == stored
    assert len(events) == len(acknowledged)  # one job state, one event
    assert set(received) == events
    assert len(received) == len(events), "an event was sent twice without a crash"
    assert intact(db)
