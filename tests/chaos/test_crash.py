"""SIGKILL under load: every acknowledged callback is stored and every event reaches the subscriber."""

from __future__ import annotations

import random
import signal
import statistics
import time

import httpx

from relay.store.records import Target
from tests.chaos.harness import ADMIN_HEADERS, Sender, column, gateway, intact, named, record, unfinished_deliveries
from tests.conftest import job_id
from tests.live import wait_until
from tests.sink import Sink


def test_sigkill_every_few_seconds_loses_no_acknowledged_callback_and_no_event(
    database: Target, long_run: bool, sink: Sink
) -> None:
    recorder = subscriber = sink
    if long_run:  # the run for figures
        duration, min_kills, uptime, limit = 600.0, 50, (3.0, 8.0), 1800.0
    else:  # 12 s of load and as many kills more as it takes to reach five: 15-25 s in all
        duration, min_kills, uptime, limit = 12.0, 5, (1.5, 4.0), 90.0
    db = database
    server = gateway(db, env={"RELAY_RETRY_SCHEDULE": "0.5,1,1,1,1,1,1,1,1,1"}).start()
    with httpx.Client(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as api:
        response = api.post("/api/subscribers", json={"name": "sink", "url": f"{subscriber.url}/ok", "timeout": 2})
        assert response.status_code == 201, response.text

    sender = Sender(server.url, rate=20).start()
    rng = random.Random(6)
    kills, restarts = 0, []
    started = time.monotonic()
    try:
        # Bounded: the duration, or the minimum number of kills, whichever comes later (and never past the limit).
        while (time.monotonic() - started < duration or kills < min_kills) and time.monotonic() - started < limit:
            time.sleep(rng.uniform(*uptime))
            server.stop(signal.SIGKILL)
            kills += 1
            down = time.monotonic()
            server.start()
            restarts.append(time.monotonic() - down)
    finally:
        sender.stop()
    elapsed = time.monotonic() - started
    try:
        wait_until(lambda: unfinished_deliveries(db) == 0, timeout=120, what="every delivery delivered")
    finally:
        server.stop()

    stored = set(column(db, "SELECT job_id FROM jobs"))
    acknowledged = {job_id(number) for number in sender.acknowledged}
    events = dict(zip(column(db, "SELECT subject FROM events"), column(db, "SELECT id FROM events"), strict=True))
    received = [request.webhook_id for request in recorder.to("/ok")]
    distinct = set(received)
    figures = {
        "seconds": round(elapsed, 1),
        "kills": kills,
        "restart_seconds_max": round(max(restarts), 2),
        "callbacks_sent": sender.sent,
        "acknowledged": len(acknowledged),
        "not_acknowledged": len(sender.unacknowledged),
        "stored": len(stored),
        "events": len(events),
        "delivered_distinct": len(distinct),
        "delivery_requests": len(received),
        "duplicates": len(received) - len(distinct),
        "http_requests": sender.requests,
        "connection_errors": sender.transport_errors,
        "statuses": dict(sorted(sender.statuses.items())),
        "ack_latency_p50_s": round(statistics.median(sender.latencies), 3),
        "ack_latency_max_s": round(max(sender.latencies), 2),
    }
    record(named("crash_under_load_long" if long_run else "crash_under_load", db), figures)

    assert kills >= min_kills
    assert sender.unacknowledged == []  # COS's retries always got through once the gateway was back
    assert acknowledged <= stored, sorted(acknowledged - stored)[:10]
    assert set(events) == stored  # one event per stored job state, none without its job
    assert set(events.values()) <= distinct, "an event never reached the subscriber"
    assert set(sender.statuses) <= {200, 503}
    assert intact(db)
