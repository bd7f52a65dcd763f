"""What a chat robot's answer does to its subscriber, through the delivery seams on both backends: an answer that
its webhook is no more disables the subscriber after one attempt and holds the delivery, as a webhook's 410 does;
a rate limit or a server error is retried. Stepped at a fake clock, no sleeping; the answers are the platforms'
own, as docs/robots.md gives them with their sources."""

from __future__ import annotations

import json

import pytest

from relay.domain.destinations import Kind
from relay.domain.subscribers import SubscriberState
from relay.settings.table import Settings
from tests.conftest import Outbox, job_body
from tests.fakes import Reply, Request

pytestmark = pytest.mark.anyio

HOUR = 3600.0
#: Where each kind's robot lives on the fake subscriber (its credential at least 8 characters: scrubbed).
PATHS = {
    Kind.WECOM: "/cgi-bin/webhook/send?key=wecom-key-0123456789",
    Kind.FEISHU: "/open-apis/bot/v2/hook/feishu-token-0123456789",
    Kind.DINGTALK: "/robot/send?access_token=ding-token-0123456789",
    Kind.SLACK: "/services/T0/B0/slack-token-0123456789",
}


def coded(body: dict[str, object], status: int = 200) -> Reply:
    return Reply(status, body=json.dumps(body).encode())


def worded(status: int, word: str, **headers: str) -> Reply:
    return Reply(status, headers=headers, body=word.encode())


@pytest.fixture
def outbox_settings(outbox_settings: Settings) -> Settings:
    """Retries every hour for 20 hours; nothing disabled for failing in that time."""
    return outbox_settings.replace(retry_schedule=(HOUR,) * 20, disable_after=30 * 24 * HOUR)


def answering(outbox: Outbox, reply: Reply) -> None:
    def robot(request: Request) -> Reply:
        return reply

    outbox.sender.handler = robot


@pytest.mark.parametrize(
    ("kind", "reply", "reason"),
    [
        (
            Kind.WECOM,
            coded({"errcode": 93000, "errmsg": "invalid webhook url, hint: [1], from ip: 192.0.2.9"}),
            "the robot answered: wecom errcode 93000: invalid webhook url",
        ),
        (
            Kind.DINGTALK,
            coded({"errcode": 300001, "errmsg": "token is not exist"}),
            "the robot answered: dingtalk errcode 300001: token is not exist",
        ),
        (
            Kind.DINGTALK,
            coded({"errcode": 300005, "errmsg": "token is not exist"}),
            "the robot answered: dingtalk errcode 300005: token is not exist",
        ),
        (Kind.SLACK, worded(403, "invalid_token"), "the robot answered: slack 403: invalid_token"),
        (Kind.SLACK, worded(404, "no_service"), "the robot answered: slack 404: no_service"),
        (Kind.SLACK, worded(404, "channel_not_found"), "the robot answered: slack 404: channel_not_found"),
        (Kind.SLACK, worded(410, "channel_is_archived"), "the robot answered: slack 410: channel_is_archived"),
        # Feishu documents no code for a deleted bot: only its status can say gone, as for any subscriber.
        (Kind.FEISHU, Reply(410), "the endpoint answered 410 Gone"),
    ],
)
async def test_a_robot_gone_disables_its_subscriber_after_one_attempt_and_holds_its_deliveries(
    outbox: Outbox, kind: Kind, reply: Reply, reason: str
) -> None:
    answering(outbox, reply)
    outbox.add("team", PATHS[kind], kind=kind, max_in_flight=1)  # one at a time: the second waits on the first
    await outbox.ingest(job_body(1), job_body(2))
    await outbox.step()
    subscriber = outbox.subscribers.get("team")
    assert subscriber.state is SubscriberState.DISABLED
    assert subscriber.disabled_reason == reason
    assert "0123456789" not in reason  # the robot's credential never reaches the reason
    assert outbox.states() == ["pending", "pending"]  # held, not dead
    assert outbox.metric("relay_subscribers_disabled_total", subscriber="team", reason="gone") == 1
    assert outbox.metric("relay_subscribers_disabled_total", subscriber="team", reason="failing") == 0
    assert await outbox.after(24 * HOUR) == 0  # past the whole retry schedule: not one more attempt
    assert len(outbox.sender.requests) == 1
    assert outbox.states() == ["pending", "pending"]


async def test_a_gone_robot_given_its_new_url_and_resumed_gets_the_held_messages(outbox: Outbox) -> None:
    answering(outbox, coded({"errcode": 93000, "errmsg": "invalid webhook url"}))
    outbox.add("team", PATHS[Kind.WECOM], kind=Kind.WECOM)
    await outbox.ingest(job_body(1), job_body(2))
    await outbox.step()
    assert outbox.subscribers.get("team").state is SubscriberState.DISABLED
    answering(outbox, coded({"errcode": 0, "errmsg": "ok"}))
    outbox.subscribers.update("team", {"url": "http://192.0.2.1/cgi-bin/webhook/send?key=new-wecom-key-0123"})
    outbox.subscribers.resume("team")
    await outbox.step()
    assert outbox.states() == ["delivered", "delivered"]


@pytest.mark.parametrize(
    ("kind", "reply", "outcome"),
    [
        (Kind.WECOM, coded({"errcode": 45009, "errmsg": "api freq out of limit"}), "http_429"),
        (Kind.WECOM, Reply(502, body=b"<html>bad gateway</html>"), "http_5xx"),
        (Kind.WECOM, coded({"errcode": 40058, "errmsg": "markdown.content exceed max length 4096"}), "http_4xx"),
        (Kind.FEISHU, coded({"code": 11232, "msg": "frequency limited"}), "http_429"),
        (Kind.FEISHU, coded({"code": 9499, "msg": "too many request"}, status=400), "http_429"),
        (Kind.FEISHU, coded({"code": 19024, "msg": "Key Words Not Found"}), "http_4xx"),
        (Kind.FEISHU, Reply(503), "http_5xx"),
        (Kind.DINGTALK, coded({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}), "http_429"),
        (Kind.DINGTALK, coded({"errcode": 310000, "errmsg": "sign not match"}), "http_4xx"),
        (Kind.DINGTALK, Reply(500), "http_5xx"),
        (Kind.SLACK, worded(429, "rate_limited", **{"Retry-After": "30"}), "http_429"),
        (Kind.SLACK, worded(500, "rollup_error"), "http_5xx"),
        (Kind.SLACK, worded(403, "action_prohibited"), "http_4xx"),
    ],
)
async def test_a_robot_rate_limited_failing_or_refusing_one_message_is_retried_and_stays_enabled(
    outbox: Outbox, kind: Kind, reply: Reply, outcome: str
) -> None:
    answering(outbox, reply)
    outbox.add("team", PATHS[kind], kind=kind)
    await outbox.ingest(job_body(1))
    await outbox.step()
    assert outbox.states() == ["pending"]
    assert outbox.metric("relay_delivery_attempts_total", subscriber="team", outcome=outcome) == 1
    await outbox.after(HOUR)  # past every platform's pause (DingTalk's is the longest: 10 minutes)
    assert len(outbox.sender.requests) == 2
    assert outbox.subscribers.get("team").state is SubscriberState.ENABLED
    assert outbox.metric("relay_subscribers_disabled_total", subscriber="team", reason="gone") == 0
