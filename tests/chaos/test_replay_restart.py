"""A bulk replay interrupted by SIGKILL finishes after the restart: every dead delivery is delivered."""

from __future__ import annotations

import signal
import time

import httpx

from relay.store.records import Target
from tests.chaos.harness import ADMIN_HEADERS, gateway, intact, named, record, scalar
from tests.conftest import CALLBACK_TOKEN, job_body
from tests.live import wait_until
from tests.sink import Sink


def states(db: Target) -> dict[str, int]:
    return {
        state: int(scalar(db, "SELECT count(*) FROM deliveries WHERE state = ?", state))
        for state in ("pending", "in_flight", "dead", "delivered")
    }


def test_a_bulk_replay_killed_midway_completes_after_the_restart(database: Target, long_run: bool, sink: Sink) -> None:
    recorder = subscriber = sink
    count = 3000 if long_run else 300
    db = database
    server = gateway(db).start()
    with httpx.Client(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as api:
        # Down for good: one retry, then dead.
        body = {"name": "s", "url": f"{subscriber.url}/fail", "retry_schedule": [0.05], "timeout": 5}
        assert api.post("/api/subscribers", json=body).status_code == 201
        for number in range(count):
            api.post(f"/cos/callback?token={CALLBACK_TOKEN}", content=job_body(number)).raise_for_status()
        wait_until(lambda: states(db)["dead"] == count, timeout=count / 5, what="every delivery dead")

        # The subscriber is fixed (slowly: the replay takes a while), and the operator replays.
        assert api.patch("/api/subscribers/s", json={"url": f"{subscriber.url}/slow/0.05"}).status_code == 200
        requeued = api.post("/api/subscribers/s/recover", params={"since": "1h"}).json()["requeued"]
        assert requeued == count
    wait_until(lambda: len(recorder.to("/slow/0.05")) >= count // 5, timeout=120, what="the replay under way")
    server.stop(signal.SIGKILL)
    at_kill = states(db)
    received_at_kill = len(recorder.to("/slow/0.05"))

    restarted = time.monotonic()
    server.start()
    try:
        wait_until(lambda: states(db)["delivered"] == count, timeout=count / 2 + 60, what="the replay completed")
        finished_in = time.monotonic() - restarted
    finally:
        server.stop()
    replayed = [request.webhook_id for request in recorder.to("/slow/0.05")]
    record(
        named("replay_restart_long" if long_run else "replay_restart", db),
        {
            "dead_deliveries": count,
            "requeued": requeued,
            "delivered_before_kill": at_kill["delivered"],
            "in_flight_at_kill": at_kill["in_flight"],
            "received_before_kill": received_at_kill,
            "delivered_distinct": len(set(replayed)),
            "duplicates": len(replayed) - len(set(replayed)),
            "seconds_to_finish_after_restart": round(finished_in, 1),
        },
    )
    assert 0 < at_kill["delivered"] < count, "the kill did not land mid-replay"
    assert len(set(replayed)) == count
    assert states(db) == {"pending": 0, "in_flight": 0, "dead": 0, "delivered": count}
    assert intact(db)
