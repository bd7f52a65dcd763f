"""The tests' one set of factories and fixtures.

Factories: `job_body` (a callback for a new job), `record` / `ingest` (callbacks into a store, as the
endpoint records them). Fixtures: `settings` on a fresh database, `gateway` (the app on real uvicorn; a
module narrows it by overriding `settings`), `client` / `admin` on it, their `module_` twins (one gateway
for a module's refusal tables), `sink` (a recording subscriber on loopback), and `outbox`: the delivery
side wired as `create_app` wires it, with a fake sender, a fake clock and a fresh metrics registry, stepped
by hand with `run_once()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from relay.app.factory import create_app
from relay.deliver.destinations import Destinations
from relay.deliver.ssrf import AddressPolicy
from relay.deliver.worker import DeliveryWorker
from relay.domain.callback import IngestResult, Received
from relay.domain.clock import utc_now
from relay.domain.retry import RetryPolicy
from relay.ingest import Ingest, Reader
from relay.metrics.counters import Metrics
from relay.outbox.service import Subscribers
from relay.settings.table import Settings
from relay.store import Store, store_for
from relay.store.answers import Delivery
from relay.store.records import PostgresUrl, Target
from relay.validate.schema import CallbackSchema
from tests.fakes import FakeClock, FakeSender, subscriber
from tests.live import ThreadServer
from tests.postgres import Cluster, in_memory
from tests.sink import Sink

DATA = Path(__file__).parent / "data"
CALLBACK_TOKEN = "test-callback-cmarWPfq50YG_1nRoFfX6JvVtyndX-ao8tyQ9cjWdtM"
ADMIN_TOKEN = "test-admin-wn443g_6KtJmHqN1Kg4PwnLAGogQQ4aKDuix2aScHpU"
TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()
SAMPLE_JOB_ID = b"j7c12d4be4c935a96bfe3fb23d1a491e9"
#: Where the fake subscribers live: a documentation network, allowed for them and reached by nothing.
FAKE_NETWORK = "192.0.2.0/24"
FAKE_HOST = "http://192.0.2.1"


# -- factories ----------------------------------------------------------------------------------------


@functools.cache
def callback_schema() -> CallbackSchema:
    """The packaged schema compiled once per test process (60-200 ms each time otherwise): pass it to
    `create_app(schema=...)` and `Reader`. It is immutable, so every app and thread may share it."""
    return CallbackSchema.load()


def callback_url(token: str = CALLBACK_TOKEN) -> str:
    return f"/cos/callback?token={token}"


def job_id(number: int) -> str:
    return f"j{number:032x}"


def job_body(number: int, state: str = "Success") -> bytes:
    """The transcode sample as job ``number`` in ``state``: a new job state, so one new event."""
    return TRANSCODE.replace(SAMPLE_JOB_ID, job_id(number).encode()).replace(
        b"<State>Success</State>", f"<State>{state}</State>".encode()
    )


async def record(store: Store, *bodies: bytes, at: datetime | None = None) -> list[IngestResult]:
    """Record XML callbacks through the ingest service, as the endpoint does (events and deliveries included),
    received ``at``."""
    service, results = Ingest(store, Reader(callback_schema())), []
    for body in bodies:
        received = Received(at or utc_now(), "127.0.0.1", "application/xml", body, "xml")
        results.append((await service.ingest(received))[1])
    return results


def ingest(db: Target, *bodies: bytes) -> list[IngestResult]:
    """`record` through a store of its own (another writer on a gateway's database)."""
    with store_for(db) as store:
        return asyncio.run(record(store, *bodies))


# -- the database: SQLite, and PostgreSQL too where the store is what is tested ---------------------------

BACKENDS = ("sqlite", "postgres")
TEMPLATE = "relay_template"
TESTS = Path(__file__).parent
#: Where every test that takes a database runs on both backends: the store's conformance suite, the rules, and
#: the chaos tests (crashes, outages and concurrency on each backend).
ON_BOTH = (TESTS / "store", TESTS / "rules", TESTS / "chaos")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`database` and `module_database` are SQLite's, except under `ON_BOTH` and for tests marked
    ``both_backends`` (the PostgreSQL smoke set through the real server), which run once per backend."""
    both = metafunc.definition.get_closest_marker("both_backends") is not None or any(
        folder in metafunc.definition.path.parents for folder in ON_BOTH
    )
    backends = BACKENDS if both else BACKENDS[:1]
    if "database" in metafunc.fixturenames:
        metafunc.parametrize("database", backends, indirect=True)
    if "module_database" in metafunc.fixturenames:
        metafunc.parametrize("module_database", backends, indirect=True, scope="module")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a slow test run first (each file's tests together, for its module fixtures): the minute-long
    tests then start while every xdist worker is busy, and the short ones fill in at the end, instead of one
    long test starting last and running alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A throwaway PostgreSQL 15 cluster in memory for the session (each xdist worker has its own), with a
    migrated template database that every test's database is copied from."""
    cluster = Cluster(root=in_memory())
    cluster.start()
    try:
        cluster.psql(f"CREATE DATABASE {TEMPLATE}")
        with store_for(PostgresUrl(cluster.url(TEMPLATE))):
            pass
        yield cluster
    finally:
        cluster.remove()


def fresh_database(cluster: Cluster) -> PostgresUrl:
    """A new, migrated database of its own in ``cluster``."""
    name = f"t_{uuid.uuid4().hex}"
    cluster.copy_database(name, TEMPLATE)
    return PostgresUrl(cluster.url(name))


@contextlib.contextmanager
def throwaway_database(cluster: Cluster) -> Iterator[PostgresUrl]:
    """`fresh_database`, dropped when the block ends."""
    url = fresh_database(cluster)
    try:
        yield url
    finally:
        cluster.drop_database(url.url.rsplit("/", 1)[1])


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Where a test's database is: an SQLite file in its temporary folder, or a fresh PostgreSQL database
    (see `pytest_generate_tests` for which tests get which)."""
    if request.param == "sqlite":
        yield tmp_path / "relay.db"
        return
    with throwaway_database(request.getfixturevalue("postgres")) as url:
        yield url


@pytest.fixture(scope="module")
def module_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """`database` shared by a module's tests (for a server they all use)."""
    if request.param == "sqlite":
        yield tmp_path_factory.mktemp("module") / "relay.db"
        return
    with throwaway_database(request.getfixturevalue("postgres")) as url:
        yield url


@pytest.fixture
def sqlite_only(database: Target) -> None:
    """For tests of what only a file can show (its size, its WAL, another process locking it)."""
    if isinstance(database, PostgresUrl):
        pytest.skip("about the SQLite file")


# -- a real gateway -----------------------------------------------------------------------------------


@pytest.fixture
def settings(database: Target) -> Settings:
    return Settings(db_path=database, callback_token=CALLBACK_TOKEN, admin_token=ADMIN_TOKEN)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[ThreadServer]:
    """cos-relay served by real uvicorn on 127.0.0.1, with this module's `settings`."""
    server = ThreadServer(create_app(settings, schema=callback_schema())).start()
    yield server
    server.stop()


@pytest.fixture
def client(gateway: ThreadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        yield http


@pytest.fixture
def admin(gateway: ThreadServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def module_settings(module_database: Target) -> Settings:
    """`settings` for `module_gateway` (a module narrows it by overriding this fixture). A module's refusal
    tables send more wrong tokens than the guessing throttle allows one address: it is off here, and proved in
    tests/test_edge.py."""
    return Settings(db_path=module_database, callback_token=CALLBACK_TOKEN, admin_token=ADMIN_TOKEN, guess_limit=0)


@pytest.fixture(scope="module")
def module_gateway(module_settings: Settings) -> Iterator[ThreadServer]:
    """`gateway` shared by a module's tests, for cases that leave its database as they found it (refusal
    tables): one server per backend, not one per case. A case that writes takes `gateway`."""
    server = ThreadServer(create_app(module_settings, schema=callback_schema())).start()
    yield server
    server.stop()


@pytest.fixture
def module_client(module_gateway: ThreadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=module_gateway.url, timeout=30) as http:
        yield http


@pytest.fixture
def module_admin(module_gateway: ThreadServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=module_gateway.url, headers=headers, timeout=30) as http:
        yield http


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A subscriber on loopback recording every request (routes: see `Sink`)."""
    recorder = Sink().serve()
    yield recorder
    recorder.stop()


# -- the delivery side, stepped by hand ---------------------------------------------------------------


@dataclass
class Outbox:
    """Store, subscribers and delivery worker as `create_app` wires them, around a fake sender and clock.

    Nothing runs by itself: `step` is one pass of the worker at the clock's current time.
    """

    store: Store
    subscribers: Subscribers
    worker: DeliveryWorker
    sender: FakeSender
    clock: FakeClock
    registry: CollectorRegistry

    def add(self, name: str, path: str, **options: Any) -> None:
        """A subscriber at ``path`` of the fake subscriber (see `tests.fakes.subscriber`)."""
        self.subscribers.add(name, f"{FAKE_HOST}{path}", **options)

    async def ingest(self, *bodies: bytes) -> list[IngestResult]:
        return await record(self.store, *bodies, at=self.clock())

    async def step(self) -> int:
        """Claim what is due now, attempt it, record it (see `DeliveryWorker.run_once`)."""
        return await self.worker.run_once()

    async def after(self, seconds: float) -> int:
        """Let ``seconds`` pass, then step."""
        self.clock.advance(seconds)
        return await self.step()

    def deliveries(self, **filters: Any) -> list[Delivery]:
        """Oldest first."""
        return list(reversed(self.store.list_deliveries(**filters).items))

    def states(self) -> list[str]:
        return [delivery["state"] for delivery in self.deliveries()]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def outbox_settings(settings: Settings) -> Settings:
    """Exact delays (no jitter is applied by `outbox`), easy to step through."""
    return settings.replace(allow_networks=FAKE_NETWORK, retry_schedule=(10, 60, 300))


@pytest.fixture
async def outbox(outbox_settings: Settings) -> AsyncIterator[Outbox]:
    settings, clock, registry = outbox_settings, FakeClock(), CollectorRegistry()
    policy = AddressPolicy.from_setting(settings.allow_networks)
    sender = FakeSender(subscriber, policy=policy, clock=clock)
    store = store_for(settings.db_path)
    worker = DeliveryWorker(
        store,
        Destinations.of(sender),
        RetryPolicy(settings.retry_schedule),
        clock,
        capacity=settings.delivery_capacity,
        disable_after=timedelta(seconds=settings.disable_after),
        rand=lambda: 0.5,  # the middle of the jitter band: every delay exactly as scheduled
        metrics=Metrics(registry),
    )
    subscribers = Subscribers(store, policy, clock, on_change=worker.wake)
    with store:
        await sender.start()
        yield Outbox(store, subscribers, worker, sender, clock, registry)
        await sender.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
