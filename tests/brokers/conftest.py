"""The three brokers, each started once per session (per xdist worker) when a test first asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers.servers import Nats, RabbitMQ, Redis


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQ]:
    server = RabbitMQ()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[Nats]:
    server = Nats()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    server = Redis()
    try:
        server.start()
        yield server
    finally:
        server.remove()
