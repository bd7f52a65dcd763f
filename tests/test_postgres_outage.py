"""PostgreSQL stopped, restarted or read-only under a running gateway: 503 with Retry-After (never 200),
/readyz not ready, and the gateway back by itself once the database is (no restart)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from relay.app.factory import create_app
from relay.settings.table import Settings
from relay.store import store_for
from relay.store.records import PostgresUrl
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, callback_schema, callback_url, job_body
from tests.databases import count
from tests.live import ThreadServer, wait_until
from tests.postgres import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A cluster of this test's own: it is stopped and started under the gateway."""
    own = Cluster()
    own.start()
    yield own
    own.remove()


@pytest.fixture
def gateway(cluster: Cluster) -> Iterator[tuple[PostgresUrl, httpx.Client]]:
    url = PostgresUrl(cluster.url())
    settings = Settings(db_path=url, callback_token=CALLBACK_TOKEN, admin_token=ADMIN_TOKEN, statement_timeout=1.0)
    server = ThreadServer(create_app(settings, schema=callback_schema())).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield url, client
    server.stop()


def post(client: httpx.Client, number: int) -> httpx.Response:
    return client.post(callback_url(), content=job_body(number))


@pytest.mark.slow
def test_a_stopped_database_gets_503_with_retry_after_and_the_gateway_recovers_when_it_returns(
    cluster: Cluster, gateway: tuple[PostgresUrl, httpx.Client]
) -> None:
    url, client = gateway
    assert post(client, 1).status_code == 200
    cluster.stop()
    refused = post(client, 2)
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert refused.json()["error"] == "unavailable"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200  # alive: only not ready
    cluster.start()
    # Connections broken by the restart are replaced as they are found: the gateway comes back by itself.
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, what="ready again")
    wait_until(lambda: post(client, 3).status_code == 200, timeout=30, what="callbacks taken again")
    assert count(url, "jobs") == 2  # job 2 was refused, never half-stored


@pytest.mark.slow
def test_a_read_only_database_gets_503_never_200_and_readyz_says_not_ready(
    cluster: Cluster, gateway: tuple[PostgresUrl, httpx.Client]
) -> None:
    url, client = gateway
    assert post(client, 1).status_code == 200
    cluster.psql("ALTER SYSTEM SET default_transaction_read_only = on")
    cluster.psql("SELECT pg_reload_conf()")
    # The reload reaches each server session at its next command, so a callback may still be taken meanwhile:
    # each try is a new job, and what is stored must be exactly the jobs answered 200.
    taken, numbers = [1], iter(range(2, 10_000))

    def refused() -> bool:
        number = next(numbers)
        status = post(client, number).status_code
        if status == 200:
            taken.append(number)
        return status == 503

    wait_until(refused, timeout=10, what="writes refused")
    assert client.get("/readyz").status_code == 503
    cluster.psql("ALTER SYSTEM RESET default_transaction_read_only", options="-c default_transaction_read_only=off")
    cluster.psql("SELECT pg_reload_conf()")
    wait_until(lambda: post(client, 10_000).status_code == 200, timeout=10, what="writes taken again")
    assert client.get("/readyz").status_code == 200
    with store_for(url, create=False) as store:
        assert store.counts()["jobs"] == len(taken) + 1
