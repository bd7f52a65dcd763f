"""A subscriber that goes away and comes back: everything arrives, on schedule, and waiting costs no CPU."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from typing import Any

import httpx

from relay.store.records import Target
from tests.chaos.harness import ADMIN_HEADERS, gateway, named, record, scalar, unfinished_deliveries
from tests.conftest import CALLBACK_TOKEN, job_body
from tests.live import ThreadServer, wait_until
from tests.procfs import cpu_share
from tests.sink import Sink

#: Long enough (75 s, in the 20 steps a schedule may have) that no delivery runs out of retries during
#: even the long run's 60 s outage.
SCHEDULE = (1.0, 2.0, *[4.0] * 18)
JITTER = 0.2
#: What a loaded 2-core machine may add to a gap: the worker's poll interval, a busy writer, scheduling.
SLACK = 1.5


def attempts(api: httpx.Client, delivery: dict[str, Any]) -> list[dict[str, Any]]:
    """Its attempts, by subscriber and event (a delivery of the event log has a row, an id, only once it failed)."""
    path = f"/api/subscribers/{delivery['subscriber']}/deliveries/{delivery['event_id']}"
    return list(api.get(path).json()["attempts_log"])


def gaps(log: list[dict[str, Any]]) -> list[float]:
    """Seconds from the end of each attempt to the start of the next (the retry policy's delay)."""
    starts = [datetime.fromisoformat(attempt["started_at"]) for attempt in log]
    return [
        (later - earlier).total_seconds() - attempt["duration"]
        for (earlier, later), attempt in zip(itertools.pairwise(starts), log, strict=False)
    ]


def test_events_held_during_a_subscriber_outage_all_arrive_after_it_on_schedule_without_busy_waiting(
    database: Target, long_run: bool
) -> None:
    # The gateway's CPU is measured against its retry rate: ~count/4 attempts a second here.
    outage, count = (60.0, 40) if long_run else (8.0, 20)
    db = database
    recorder = Sink()
    subscriber = ThreadServer(recorder.app()).start()
    port = subscriber.port
    server = gateway(db, env={"RELAY_RETRY_SCHEDULE": ",".join(map(str, SCHEDULE))}).start()
    try:
        with httpx.Client(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as api:
            assert api.post("/api/subscribers", json={"name": "s", "url": f"{subscriber.url}/ok"}).status_code == 201
            api.post(f"/cos/callback?token={CALLBACK_TOKEN}", content=job_body(0)).raise_for_status()
            recorder.wait_for("/ok", 1)

            subscriber.stop()
            down_at = time.monotonic()
            for number in range(1, count + 1):
                api.post(f"/cos/callback?token={CALLBACK_TOKEN}", content=job_body(number)).raise_for_status()
            time.sleep(1.5)  # the first attempts and retries have failed; now everything waits
            window = min(10.0, outage - 3)
            attempts_before = scalar(db, "SELECT count(*) FROM attempts")
            cpu = cpu_share(server.pid, window)
            attempt_rate = (scalar(db, "SELECT count(*) FROM attempts") - attempts_before) / window
            time.sleep(max(0.0, outage - (time.monotonic() - down_at)))

            subscriber = ThreadServer(recorder.app(), port=port).start()
            up_at = time.monotonic()
            received = recorder.wait_for("/ok", count + 1, timeout=max(SCHEDULE) * (1 + JITTER) + 20)
            recovered_in = time.monotonic() - up_at
            wait_until(lambda: unfinished_deliveries(db) == 0, timeout=20, what="all deliveries recorded delivered")

            items = api.get("/api/deliveries", params={"limit": "500"}).json()["items"]
            logs = [attempts(api, item) for item in items]
    finally:
        server.stop()
        subscriber.stop()

    retried = [log for log in logs if len(log) > 1]
    record(
        named("subscriber_outage_long" if long_run else "subscriber_outage", db),
        {
            "outage_seconds": outage,
            "events": count + 1,
            "delivered_distinct": len({request.webhook_id for request in received}),
            "delivery_requests": len(received),
            "max_attempts": max(len(log) for log in logs),
            "gateway_cpu_share_during_outage": round(cpu, 4),
            "attempts_per_second_during_outage": round(attempt_rate, 1),
            "all_delivered_seconds_after_recovery": round(recovered_in, 2),
        },
    )

    assert len({request.webhook_id for request in received}) == count + 1
    assert cpu < 0.10, f"the gateway used {cpu:.0%} of a core while its only subscriber was down"
    assert retried, "no delivery was retried: the outage was not noticed"
    for log in retried:
        assert {attempt["outcome"] for attempt in log[:-1]} == {"connection_error"}
        assert log[-1]["outcome"] == "success"
        for position, gap in enumerate(gaps(log)):
            planned = SCHEDULE[position]
            assert planned * (1 - JITTER) - 0.1 <= gap <= planned * (1 + JITTER) + SLACK, (position, gap, log)
