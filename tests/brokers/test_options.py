"""A broker URL's query options are checked when the subscriber is made: a clear 400, not a first failed delivery."""

from __future__ import annotations

import httpx
import pytest

from relay.settings.table import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(allow_networks="127.0.0.0/8")


@pytest.mark.parametrize(
    ("kind", "url", "error"),
    [
        ("redis", "redis://127.0.0.1:6379?maxlen=lots", "maxlen must be a positive integer; not 'lots'"),
        ("redis", "redis://127.0.0.1:6379?maxlen=0", "maxlen must be a positive integer; not '0'"),
        ("redis", "redis://127.0.0.1:6379?strem=x", "a redis URL's query takes stream and maxlen; not strem"),
        ("rabbitmq", "amqp://u:p@127.0.0.1?exchnage=x", "a rabbitmq URL's query takes exchange; not exchnage"),
        ("nats", "nats://127.0.0.1?prefix=a.*", "prefix must be NATS subject tokens separated by dots"),
        ("nats", "nats://127.0.0.1?prefix=a..b", "prefix must be NATS subject tokens separated by dots"),
    ],
)
def test_a_broker_url_option_that_could_never_work_is_refused_at_creation_naming_it(
    admin: httpx.Client, kind: str, url: str, error: str
) -> None:
    answer = admin.post("/api/subscribers", json={"name": "broker", "kind": kind, "url": url})
    assert answer.status_code == 400
    assert error in answer.text
    assert "u:p" not in answer.text


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("redis", "redis://:pass@127.0.0.1:6379/2?stream=cos&maxlen=1000"),
        ("rabbitmq", "amqp://u:p@127.0.0.1/vhost?exchange=cos-relay"),
        ("nats", "nats://127.0.0.1?prefix=media.jobs"),
    ],
)
def test_a_broker_url_with_its_options_is_accepted_and_shown_without_its_password(
    admin: httpx.Client, kind: str, url: str
) -> None:
    answer = admin.post("/api/subscribers", json={"name": "broker", "kind": kind, "url": url})
    assert answer.status_code == 201, answer.text
    assert "pass@" not in answer.text
    assert ":p@" not in answer.text
