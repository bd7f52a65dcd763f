"""A subscriber's kind and limits as the API takes them: each refusal a 400 naming the fix, and robot and broker
URLs, which are credentials, shown masked."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from relay.deliver.signing import generate_secret
from relay.settings.table import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(allow_networks="127.0.0.0/8")


def create(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/api/subscribers", json={"name": "s", **body})


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"url": "http://127.0.0.1:9/x", "kind": "email"}, "kind must be one of webhook, wecom"),
        ({"url": "http://127.0.0.1:9/x", "kind": "rabbitmq"}, "is not amqp or amqps (a rabbitmq subscriber's url)"),
        ({"url": "amqp://127.0.0.1/", "kind": "webhook"}, "scheme 'amqp' is not http or https"),
        ({"url": "http://127.0.0.1:9/x", "rate": "10/h"}, 'like "10/s" or "600/m"'),
        ({"url": "http://127.0.0.1:9/x", "rate": "0/s"}, "rate must be from 1/m"),
        ({"url": "http://127.0.0.1:9/x", "template": "{{ type }}"}, "template is for robot subscribers"),
        ({"url": "redis://127.0.0.1/", "kind": "redis", "handshake": True}, "handshake is for webhook"),
        ({"url": "http://127.0.0.1:9/x", "kind": "slack", "content_mode": "binary"}, "a robot gets a chat message"),
        ({"url": "http://127.0.0.1:9/x", "content_mode": "json"}, "content_mode must be structured or binary"),
        ({"url": "http://127.0.0.1:9/x", "kind": "wecom", "secret": "whsec_abc"}, "does not sign its messages"),
        ({"url": "http://user:pw@127.0.0.1:9/x", "kind": "slack"}, "must not carry credentials"),
    ],
)
def test_an_option_the_kind_cannot_use_is_refused_naming_the_fix(
    admin: httpx.Client, body: dict[str, Any], says: str
) -> None:
    response = create(admin, **body)
    assert response.status_code == 400, response.text
    assert says in response.json()["detail"]


def test_a_robots_and_a_brokers_url_are_shown_masked(admin: httpx.Client) -> None:
    robot = create(
        admin, url="http://127.0.0.1:9/cgi-bin/webhook/send?key=693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa", kind="wecom"
    )
    assert robot.status_code == 201, robot.text
    assert robot.json()["url"] == "http://127.0.0.1:9/cgi-bin/webhook/send?key=693a***"
    broker = admin.post(
        "/api/subscribers", json={"name": "mq", "url": "amqp://relay:hunter2@127.0.0.1:5672/", "kind": "rabbitmq"}
    )
    assert broker.status_code == 201, broker.text
    assert "hunter2" not in admin.get("/api/subscribers").text
    assert broker.json()["url"] == "amqp://relay:***@127.0.0.1:5672/"


def test_the_kind_changes_only_with_a_url_of_its_own(admin: httpx.Client) -> None:
    assert create(admin, url="http://127.0.0.1:9/x").status_code == 201
    refused = admin.patch("/api/subscribers/s", json={"kind": "nats"})
    assert refused.status_code == 400
    assert "scheme 'http' is not nats or tls" in refused.json()["detail"]
    changed = admin.patch("/api/subscribers/s", json={"kind": "nats", "url": "nats://127.0.0.1:4222"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["kind"], changed.json()["url"]) == ("nats", "nats://127.0.0.1:4222")


def test_rate_handshake_and_content_mode_are_shown_and_can_be_changed(admin: httpx.Client) -> None:
    created = create(admin, url="http://127.0.0.1:9/x", rate="600/m", handshake=True, content_mode="binary")
    assert created.status_code == 201, created.text
    shown = created.json()
    assert (shown["kind"], shown["rate"], shown["handshake"], shown["content_mode"]) == (
        "webhook",
        "600/m",
        True,
        "binary",
    )
    changed = admin.patch("/api/subscribers/s", json={"rate": None, "handshake": False}).json()
    assert (changed["rate"], changed["handshake"]) == (None, False)


@pytest.mark.parametrize(
    ("kind", "body", "says"),
    [
        ("slack", {}, "a slack robot does not sign its messages: it has no secret to rotate"),
        ("wecom", {"secret": generate_secret()}, "a wecom robot does not sign its messages"),
        ("feishu", {}, "a feishu robot signs with the secret its platform shows: give that secret"),
        ("dingtalk", {}, "a dingtalk robot signs with the secret its platform shows: give that secret"),
    ],
)
def test_a_robots_secret_is_rotated_only_to_the_one_its_platform_shows(
    admin: httpx.Client, kind: str, body: dict[str, Any], says: str
) -> None:
    assert create(admin, url="http://127.0.0.1:9/robot", kind=kind).status_code == 201
    refused = admin.post("/api/subscribers/s/rotate-secret", json=body)
    assert refused.status_code == 400, refused.text
    assert says in refused.json()["detail"]
    assert admin.get("/api/subscribers/s/secret").json()["secret"] == ""  # unchanged: none was made for it


@pytest.mark.parametrize("kind", ["feishu", "dingtalk"])
def test_a_signing_robot_takes_its_platforms_secret_whatever_its_form(admin: httpx.Client, kind: str) -> None:
    # Not a Standard Webhooks secret: the platform's, as the robot's settings page shows it.
    platform_secret = "SEC-not/base64%"
    assert create(admin, url="http://127.0.0.1:9/robot", kind=kind).status_code == 201
    rotated = admin.post("/api/subscribers/s/rotate-secret", json={"secret": platform_secret})
    assert rotated.status_code == 200, rotated.text
    assert admin.get("/api/subscribers/s/secret").json()["secret"] == platform_secret
