"""Two replicas on PostgreSQL behind a real nginx (deploy/nginx/cos-relay-replicas.conf, the file operators
install), under load: one replica SIGKILLed and restarted several times, then PostgreSQL itself restarted.
Every acknowledged callback is stored and delivered; nothing is acknowledged that was not committed."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from relay.store.records import PostgresUrl
from tests.balancer import balancing
from tests.chaos.harness import ADMIN_HEADERS, Sender, gateway, record
from tests.conftest import job_id
from tests.databases import rows
from tests.live import ProcessServer, wait_until
from tests.postgres import Cluster
from tests.sink import Sink

pytestmark = pytest.mark.slow

KILLS = 3
RATE = 30.0


@dataclass
class Deployment:
    cluster: Cluster
    url: PostgresUrl
    replicas: list[ProcessServer]
    balancer: str
    sink: Sink


@pytest.fixture
def deployment(tmp_path: Path, sink: Sink) -> Iterator[Deployment]:
    cluster = Cluster()
    cluster.start()
    url = PostgresUrl(cluster.url())
    replicas = [gateway(url, args=("--forwarded-allow-ips", "127.0.0.1")) for _ in range(2)]
    try:
        for replica in replicas:
            replica.start()
        with balancing(tmp_path, [replica.port for replica in replicas]) as balancer:
            # A short timeout: a killed replica's leases expire within seconds, not minutes.
            body = {"name": "hook", "url": f"{sink.url}/ok", "max_in_flight": 8, "timeout": 2}
            added = httpx.post(f"{balancer}/api/subscribers", json=body, headers=ADMIN_HEADERS)
            assert added.status_code == 201, added.text
            yield Deployment(cluster, url, replicas, balancer, sink)
    finally:
        for replica in replicas:
            replica.stop()
        cluster.remove()


def settle(deployment: Deployment, sender: Sender) -> dict[str, int]:
    """Wait until every acknowledged callback is stored and delivered; the figures to record."""
    acknowledged = {job_id(number) for number in sender.acknowledged}
    stored = {row["job_id"] for row in rows(deployment.url, "SELECT job_id FROM jobs")}
    assert acknowledged <= stored, f"acknowledged but not stored: {sorted(acknowledged - stored)[:5]}"

    def delivered() -> bool:
        received = {request.event["subject"] for request in list(deployment.sink.requests)}
        return acknowledged <= received

    wait_until(delivered, timeout=90, what="every acknowledged callback delivered")
    subjects = [request.event["subject"] for request in list(deployment.sink.requests)]
    return {
        "acknowledged": len(acknowledged),
        "unacknowledged": len(sender.unacknowledged),
        "delivered_requests": len(subjects),
        "duplicate_deliveries": len(subjects) - len(set(subjects)),
        **{f"status_{status}": count for status, count in sorted(sender.statuses.items())},
        "transport_errors": sender.transport_errors,
    }


def acknowledged_more(sender: Sender, count: int, timeout: float = 30) -> None:
    target = len(sender.acknowledged) + count
    wait_until(lambda: len(sender.acknowledged) >= target, timeout=timeout, what=f"{count} more acknowledged")


def test_a_replica_sigkilled_and_restarted_under_load_loses_no_acknowledged_callback(
    deployment: Deployment,
) -> None:
    sender = Sender(deployment.balancer, RATE).start()
    try:
        for kill in range(KILLS):
            acknowledged_more(sender, 20)
            victim = deployment.replicas[kill % 2]
            victim.stop(signal.SIGKILL)
            acknowledged_more(sender, 20)  # the other replica takes everything meanwhile
            victim.start()
        acknowledged_more(sender, 20)
    finally:
        sender.stop()
    figures = settle(deployment, sender)
    record("replicas_sigkill", {"kills": KILLS, **figures})
    assert figures["unacknowledged"] == 0
    # A delivery is sent twice only when a replica died with it in flight (at most its lanes, per kill).
    assert figures["duplicate_deliveries"] <= KILLS * 8


def test_postgres_restarted_under_load_gets_503_meanwhile_and_everything_acknowledged_is_delivered(
    deployment: Deployment,
) -> None:
    sender = Sender(deployment.balancer, RATE, give_up=120).start()
    try:
        acknowledged_more(sender, 20)
        deployment.cluster.stop()
        wait_until(lambda: sender.statuses[503] > 0, timeout=20, what="a 503 while PostgreSQL is down")
        stopped_at = time.monotonic()
        wait_until(lambda: time.monotonic() - stopped_at > 2, what="PostgreSQL down a while")
        deployment.cluster.start()
        acknowledged_more(sender, 40, timeout=60)
    finally:
        sender.stop()
    figures = settle(deployment, sender)
    record("replicas_postgres_restart", figures)
    assert figures["status_503"] > 0
    assert figures["unacknowledged"] == 0
