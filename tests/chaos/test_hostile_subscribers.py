"""Slow and hostile subscribers: none slows a healthy one, grows the gateway's memory, or gets past the SSRF guard."""

from __future__ import annotations

import statistics
import time

import httpx

from relay.store.records import Target
from tests.chaos.harness import ADMIN_HEADERS, Sender, gateway, named, record
from tests.chaos.hostile import HostileServer
from tests.databases import values
from tests.live import wait_until
from tests.procfs import MIB, peak_rss, reset_peak_rss, rss
from tests.sink import Sink

#: name -> (path on the hostile server, subscriber timeout, the outcome every attempt must have)
HOSTILE = {
    "hangs": ("/hang", 3, "timeout"),
    "trickles": ("/trickle", 3, "timeout"),
    "huge-body": ("/huge", 5, "http_5xx"),
    "redirects": ("/redirect", 5, "http_3xx"),
}


def test_hostile_subscribers_neither_slow_a_healthy_one_nor_grow_memory_nor_pass_the_ssrf_guard(
    database: Target, long_run: bool, sink: Sink
) -> None:
    recorder = healthy = sink
    duration = 180.0 if long_run else 15.0
    db = database
    # Each delivery retries every ~0.5 s as often as a schedule may (20 steps), and new events keep
    # coming: the hostile answers never stop.
    server = gateway(db, env={"RELAY_RETRY_SCHEDULE": ",".join(["0.5"] * 20)}).start()
    try:
        with HostileServer() as hostile, httpx.Client(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as api:
            for name, (path, timeout, _) in HOSTILE.items():
                # Answers kept, so the 4 KiB cap on what is kept shows.
                body = {"name": name, "url": hostile.url + path, "timeout": timeout, "store_response": True}
                assert api.post("/api/subscribers", json=body).status_code == 201
            assert api.post("/api/subscribers", json={"name": "healthy", "url": f"{healthy.url}/ok"}).status_code == 201

            time.sleep(1)
            baseline = rss(server.pid)
            assert reset_peak_rss(server.pid)
            sender = Sender(server.url, rate=5).start()
            samples = []
            started = time.monotonic()
            try:
                while time.monotonic() - started < duration:
                    time.sleep(1)
                    samples.append(rss(server.pid))
            finally:
                sender.stop()
            received = recorder.wait_for("/ok", len(sender.acknowledged), timeout=30)
            peak = peak_rss(server.pid)
            wait_until(lambda: hostile.requests["/huge"] >= 2, timeout=30, what="the huge body was sent twice")
            server.stop()  # before the hostile server goes away, which would make refused connections
            requests = dict(hostile.requests)
    finally:
        server.stop()

    outcomes = {
        (name, outcome): count
        for name, outcome, count in values(
            db,
            "SELECT s.name, a.outcome, count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " JOIN subscribers s ON s.id = d.subscriber_id GROUP BY s.name, a.outcome",
        )
    }
    kept = {
        len(body)
        for (body,) in values(
            db,
            "SELECT a.response_body FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " JOIN subscribers s ON s.id = d.subscriber_id WHERE s.name = 'huge-body'",
        )
    }
    latencies = [request.at - sender.acknowledged_at[int(request.event["subject"][1:], 16)] for request in received]
    third = max(1, len(samples) // 3)
    figures = {
        "seconds": duration,
        "callbacks": len(sender.acknowledged),
        "healthy_delivered_distinct": len({request.webhook_id for request in received}),
        "healthy_latency_p50_s": round(statistics.median(latencies), 3),
        "healthy_latency_max_s": round(max(latencies), 2),
        "rss_baseline_mib": round(baseline / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_end_mib": round(samples[-1] / MIB, 1),
        "hostile_requests": requests,
        "attempt_outcomes": {f"{name}:{outcome}": count for (name, outcome), count in sorted(outcomes.items())},
    }
    record(named("hostile_subscribers_long" if long_run else "hostile_subscribers", db), figures)

    assert len({request.webhook_id for request in received}) == len(sender.acknowledged)
    assert max(latencies) < 5.0, "a hostile subscriber held up the healthy one"
    # Never the 100 MB body in memory, and no growth from the first third of the run to its end.
    assert peak - baseline < 100 * MIB
    assert max(samples[-third:]) - max(samples[:third]) < 40 * MIB, [round(s / MIB) for s in samples]
    for name, (_, _, expected) in HOSTILE.items():
        seen = {outcome for (who, outcome) in outcomes if who == name}
        assert seen == {expected}, (name, seen)
    assert kept == {4096}  # of each 100 MB body, the first 4 KiB kept for the attempt log
    # The redirect was never followed: the only path asked for is the subscriber's own.
    assert set(requests) == {path for path, _, _ in HOSTILE.values()}
