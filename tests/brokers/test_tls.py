"""TLS to each broker: the connection goes to the address the SSRF policy vetted, and the certificate is still checked
against the name in the URL, with the CAs the system trusts (``SSL_CERT_FILE`` here)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.deliver.brokers import brokers
from relay.deliver.destination import Destination
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import Outcome
from relay.domain.destinations import Kind
from tests.brokers import consume
from tests.brokers.certs import Certs, issue
from tests.brokers.servers import Nats, RabbitMQ, Redis
from tests.brokers.test_destinations import claim

pytestmark = pytest.mark.anyio

LOOPBACK = AddressPolicy.from_setting("127.0.0.0/8, ::1/128")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return issue(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def trusted(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> Certs:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))
    return certs


@pytest.fixture
def tls_nats(certs: Certs) -> Iterator[Nats]:
    server = Nats(tls=certs)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def tls_redis(certs: Certs) -> Iterator[Redis]:
    server = Redis(tls=certs)
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def destinations() -> AsyncIterator[dict[Kind, Destination]]:
    made = brokers(LOOPBACK)
    yield made
    for destination in made.values():
        await destination.close()


async def test_nats_over_tls_connects_to_the_vetted_address_and_checks_the_name_in_the_url(
    trusted: Certs, tls_nats: Nats, destinations: dict[Kind, Destination]
) -> None:
    await consume.add_stream(tls_nats.url, "TLS", ["cos.>"], tls=consume.trusting(trusted.ca))
    attempt = await destinations[Kind.NATS].send(claim(Kind.NATS, tls_nats.url), datetime.now(UTC))
    assert attempt.outcome is Outcome.SUCCESS, attempt
    # The certificate names localhost, not 127.0.0.1: the name checked is the URL's, whatever address is dialled.
    by_address = f"tls://127.0.0.1:{tls_nats.port}"
    refused = await destinations[Kind.NATS].send(claim(Kind.NATS, by_address, 1), datetime.now(UTC))
    assert refused.outcome is Outcome.CONNECTION_ERROR
    assert "SSLCertVerificationError" in (refused.error or "")


async def test_nats_over_tls_refuses_a_certificate_from_a_ca_the_system_does_not_trust(
    certs: Certs, tls_nats: Nats, destinations: dict[Kind, Destination], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(Path(certs.ca).with_name("nothing.pem")))
    attempt = await destinations[Kind.NATS].send(claim(Kind.NATS, tls_nats.url), datetime.now(UTC))
    assert attempt.outcome is Outcome.CONNECTION_ERROR
    assert "SSLCertVerificationError" in (attempt.error or "")


async def test_redis_over_tls_connects_to_the_vetted_address_and_checks_the_name_in_the_url(
    trusted: Certs, tls_redis: Redis, destinations: dict[Kind, Destination]
) -> None:
    attempt = await destinations[Kind.REDIS].send(claim(Kind.REDIS, f"{tls_redis.url}?stream=tls"), datetime.now(UTC))
    assert attempt.outcome is Outcome.SUCCESS, attempt
    by_address = f"rediss://127.0.0.1:{tls_redis.port}?stream=tls"
    refused = await destinations[Kind.REDIS].send(claim(Kind.REDIS, by_address, 1), datetime.now(UTC))
    assert refused.outcome is Outcome.CONNECTION_ERROR
    assert "SSLCertVerificationError" in (refused.error or "")


@pytest.fixture
def tls_rabbitmq(certs: Certs) -> Iterator[RabbitMQ]:
    server = RabbitMQ(tls=certs)
    server.start()
    yield server
    server.remove()


@pytest.mark.slow
async def test_rabbitmq_over_tls_connects_to_the_vetted_address_and_checks_the_name_in_the_url(
    trusted: Certs, tls_rabbitmq: RabbitMQ, destinations: dict[Kind, Destination]
) -> None:
    # amq.topic with no queue bound: the broker's answer (unroutable) is proof enough that TLS carried the publish.
    attempt = await destinations[Kind.RABBITMQ].send(claim(Kind.RABBITMQ, tls_rabbitmq.url), datetime.now(UTC))
    assert (attempt.outcome, attempt.error) == (
        Outcome.HTTP_4XX,
        "unroutable: no queue bound to exchange 'amq.topic' for cos.job.failed",
    )
    by_address = f"amqps://guest:guest@127.0.0.1:{tls_rabbitmq.port}/"
    refused = await destinations[Kind.RABBITMQ].send(claim(Kind.RABBITMQ, by_address, 1), datetime.now(UTC))
    assert refused.outcome is Outcome.CONNECTION_ERROR
    assert "SSLCertVerificationError" in (refused.error or "")
