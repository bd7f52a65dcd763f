"""Each platform's own ways: its signature (made per attempt, as its documentation says) and what its answers mean."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from relay.deliver.robots.dingtalk import DingTalk
from relay.deliver.robots.feishu import Feishu
from relay.deliver.robots.platform import Platform
from relay.deliver.robots.slack import Slack
from relay.deliver.robots.wecom import WeCom
from relay.domain.delivery import Attempt, Outcome
from tests.deliver.robots.platforms import dingtalk_sign, feishu_sign

AT = datetime(2025, 1, 6, 9, 0, 0, 123000, tzinfo=UTC)
SECRET = "SECa1b2c3d4e5f6a1b2c3d4e5f6"


def test_feishu_signs_in_the_body_with_the_time_in_seconds() -> None:
    url, payload = Feishu().signed("https://open.feishu.cn/open-apis/bot/v2/hook/t", {"msg_type": "text"}, SECRET, AT)
    assert url == "https://open.feishu.cn/open-apis/bot/v2/hook/t"
    assert payload["timestamp"] == str(int(AT.timestamp()))
    assert payload["sign"] == feishu_sign(SECRET, payload["timestamp"])
    assert payload["msg_type"] == "text"


def test_dingtalk_signs_in_the_query_with_the_time_in_milliseconds_url_encoded() -> None:
    url, payload = DingTalk().signed("https://oapi.dingtalk.com/robot/send?access_token=t", {}, SECRET, AT)
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["access_token"] == "t"
    assert query["timestamp"] == str(int(AT.timestamp() * 1000))
    assert query["sign"] == dingtalk_sign(SECRET, query["timestamp"])
    assert "+" not in url.partition("sign=")[2]  # base64's + / = are percent-encoded
    assert payload == {}


@pytest.mark.parametrize("platform", [Feishu(), DingTalk()])
def test_a_robot_without_a_secret_sends_no_signature(platform: Platform) -> None:
    url = "https://robot.example/hook?access_token=t"
    assert platform.signed(url, {"a": 1}, "", AT) == (url, {"a": 1})


def answered(status: int | None, body: object = b"", retry_after: float | None = None) -> Attempt:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    outcome = Outcome.TIMEOUT if status is None else Outcome.SUCCESS if status < 300 else Outcome.HTTP_4XX
    if status == 429:
        outcome = Outcome.HTTP_429
    return Attempt(outcome, status, 0.1, None, raw, retry_after)


@pytest.mark.parametrize(
    ("platform", "answer", "outcome", "error", "retry_after"),
    [
        (WeCom(), answered(200, {"errcode": 0, "errmsg": "ok"}), Outcome.SUCCESS, None, None),
        (
            WeCom(),
            answered(200, {"errcode": 93000, "errmsg": "invalid webhook url, hint: [1], from ip: 1.2.3.4"}),
            Outcome.ROBOT_GONE,
            "wecom errcode 93000: invalid webhook url",
            None,
        ),
        (
            WeCom(),
            answered(200, {"errcode": 40058, "errmsg": "markdown.content exceed max length 4096"}),
            Outcome.HTTP_4XX,
            "wecom errcode 40058: markdown.content exceed max length 4096",
            None,
        ),
        (
            WeCom(),
            answered(200, {"errcode": 45009, "errmsg": "freq"}),
            Outcome.HTTP_429,
            "wecom errcode 45009: freq",
            60,
        ),
        (
            WeCom(),
            answered(200, b"<html>proxy</html>"),
            Outcome.HTTP_5XX,
            "wecom answered 200 without errcode",
            None,
        ),
        (WeCom(), answered(None), Outcome.TIMEOUT, None, None),
        (Feishu(), answered(200, {"code": 0, "msg": "success"}), Outcome.SUCCESS, None, None),
        (Feishu(), answered(200, {"StatusCode": 0, "StatusMessage": "success"}), Outcome.SUCCESS, None, None),
        (
            Feishu(),
            answered(200, {"code": 19024, "msg": "Key Words Not Found"}),
            Outcome.HTTP_4XX,
            "feishu code 19024: Key Words Not Found",
            None,
        ),
        (
            Feishu(),
            answered(400, {"code": 9499, "msg": "too many request"}),
            Outcome.HTTP_429,
            "feishu code 9499: too many request",
            60,
        ),
        (
            Feishu(),
            answered(200, {"code": 9499, "msg": "Bad Request"}),
            Outcome.HTTP_4XX,
            "feishu code 9499: Bad Request",
            None,
        ),
        (
            Feishu(),
            answered(200, {"code": 11232, "msg": "frequency limited"}),
            Outcome.HTTP_429,
            "feishu code 11232: frequency limited",
            60,
        ),
        (DingTalk(), answered(200, {"errcode": 0, "errmsg": "ok"}), Outcome.SUCCESS, None, None),
        (
            DingTalk(),
            answered(200, {"errcode": 310000, "errmsg": "keywords not in content"}),
            Outcome.HTTP_4XX,
            "dingtalk errcode 310000: keywords not in content",
            None,
        ),
        (
            DingTalk(),
            answered(200, {"errcode": 300001, "errmsg": "token is not exist"}),
            Outcome.ROBOT_GONE,
            "dingtalk errcode 300001: token is not exist",
            None,
        ),
        (
            DingTalk(),
            answered(200, {"errcode": 300005, "errmsg": "token is not exist"}),
            Outcome.ROBOT_GONE,
            "dingtalk errcode 300005: token is not exist",
            None,
        ),
        (
            DingTalk(),
            answered(200, {"errcode": 130101, "errmsg": "send too fast"}),
            Outcome.HTTP_429,
            "dingtalk errcode 130101: send too fast",
            600,
        ),
        (Slack(), answered(200, b"ok"), Outcome.SUCCESS, None, None),
        (Slack(), answered(429, b"rate_limited", retry_after=30), Outcome.HTTP_429, "slack 429: rate_limited", 30),
        (Slack(), answered(200, b"rate_limited"), Outcome.HTTP_429, "slack 200: rate_limited", None),
        (Slack(), answered(404, b"no_service"), Outcome.ROBOT_GONE, "slack 404: no_service", None),
        (Slack(), answered(404, b"channel_not_found"), Outcome.ROBOT_GONE, "slack 404: channel_not_found", None),
        (Slack(), answered(403, b"invalid_token"), Outcome.ROBOT_GONE, "slack 403: invalid_token", None),
        (Slack(), answered(410, b"channel_is_archived"), Outcome.ROBOT_GONE, "slack 410: channel_is_archived", None),
        (Slack(), answered(403, b"action_prohibited"), Outcome.HTTP_4XX, "slack 403: action_prohibited", None),
        (Slack(), answered(400, b"invalid_payload"), Outcome.HTTP_4XX, "slack 400: invalid_payload", None),
    ],
)
def test_an_answer_means_what_the_platform_says_in_it(
    platform: Platform, answer: Attempt, outcome: Outcome, error: str | None, retry_after: float | None
) -> None:
    understood = platform.answer(answer)
    assert understood.outcome is outcome
    assert understood.error == error
    assert understood.retry_after == retry_after
    assert understood.status == answer.status
