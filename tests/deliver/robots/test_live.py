"""Chat robots end to end: a real `cos-relay serve` sends a failed job to robots of each kind, created through the
API, at a receiver that checks each platform's signature as its documentation says and answers as it does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA, callback_url
from tests.deliver.robots.platforms import Platforms
from tests.live import ProcessServer, wait_until

PUBLIC_URL = "https://relay.example"
JOB = "j4f03b1d05f0e7044d2c4d6c4845357f0"
#: The failed transcode sample, its object key written to mention everyone and plant a link if printed raw.
FAILED = (
    (DATA / "samples" / "transcode_failed.xml")
    .read_bytes()
    .replace(b"uploads/2024/11/corrupted-upload.mp4", b"uploads/&lt;@all&gt;[reset](https://evil.example)_x.mp4")
)
FEISHU_SECRET = "feishu-signing-secret-0123456789"
DINGTALK_SECRET = "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
TEMPLATE = "{{ data.Tag }} {{ data.Code }} on {{ data.Input.Object }} <@alice>\n{{ message }}"


def robots(url: str) -> dict[str, dict[str, Any]]:
    """The subscribers, by name: each platform's robot that succeeds, is rate limited and is refused."""
    wecom, feishu, dingtalk = f"{url}/cgi-bin/webhook/send?key=", f"{url}/open-apis/bot/v2/hook/", f"{url}/robot/send"
    return {
        "wecom": {"kind": "wecom", "url": f"{wecom}ok-wecom-key-0123"},
        "wecom-templated": {"kind": "wecom", "url": f"{wecom}ok-templated-key-0123", "template": TEMPLATE},
        "wecom-bad": {"kind": "wecom", "url": f"{wecom}bad-wecom-key-0123"},
        "wecom-limited": {"kind": "wecom", "url": f"{wecom}limited-wecom-key-0123"},
        "feishu": {"kind": "feishu", "url": f"{feishu}ok-feishu-token-0123", "secret": FEISHU_SECRET},
        "feishu-wrong-secret": {"kind": "feishu", "url": f"{feishu}ok-feishu-other-0123", "secret": "not-the-one"},
        "feishu-limited": {"kind": "feishu", "url": f"{feishu}limited-feishu-token-0123"},
        "dingtalk": {"kind": "dingtalk", "url": f"{dingtalk}?access_token=ok-ding-0123", "secret": DINGTALK_SECRET},
        "dingtalk-unsigned": {"kind": "dingtalk", "url": f"{dingtalk}?access_token=ok-ding-unsigned-0123"},
        "dingtalk-limited": {"kind": "dingtalk", "url": f"{dingtalk}?access_token=limited-ding-0123"},
        "slack": {"kind": "slack", "url": f"{url}/services/T000/B000/ok-slack-token-0123"},
        "slack-bad": {"kind": "slack", "url": f"{url}/services/T000/B000/bad-slack-token-0123"},
        "slack-limited": {"kind": "slack", "url": f"{url}/services/T000/B000/limited-slack-token-0123"},
    }


@pytest.fixture(scope="module")
def platforms() -> Iterator[Platforms]:
    receiver = Platforms().sign("ok-feishu-token-0123", FEISHU_SECRET).sign("ok-feishu-other-0123", FEISHU_SECRET)
    receiver.sign("ok-ding-0123", DINGTALK_SECRET).serve()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def api(platforms: Platforms, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """cos-relay serving robots of every kind, with the failed job posted once."""
    env = {
        "RELAY_ALLOW_NETWORKS": "127.0.0.0/8",
        "RELAY_PUBLIC_URL": PUBLIC_URL,
        "RELAY_RETRY_SCHEDULE": "1,60",  # a failure is retried once soon, then not before the module ends
        "RELAY_POLL_INTERVAL": "0.1",
    }
    args = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN)
    server = ProcessServer(tmp_path_factory.mktemp("robots") / "relay.db", args=args, env=env).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            for name, options in robots(platforms.url).items():
                created = client.post("/api/subscribers", json={"name": name, **options})
                assert created.status_code == 201, created.text
            posted = client.post(callback_url(), content=FAILED, headers={"Content-Type": "application/xml"})
            assert posted.status_code == 200, posted.text
            yield client
    finally:
        printed = server.stop()
    assert "Traceback" not in printed


def attempts(api: httpx.Client, subscriber: str, count: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The subscriber's delivery and its attempts, once ``count`` are recorded (oldest first)."""
    found: dict[str, Any] = {}

    def recorded() -> bool:
        items = api.get("/api/deliveries", params={"subscriber": subscriber}).json()["items"]
        if items:  # by subscriber and event: a delivery of the event log has a row (id) only once it failed
            found.update(api.get(f"/api/subscribers/{subscriber}/deliveries/{items[0]['event_id']}").json())
        return len(found.get("attempts_log", ())) >= count and found["state"] != "in_flight"

    wait_until(recorded, what=f"{count} attempt(s) to {subscriber} recorded")
    return found, sorted(found["attempts_log"], key=lambda attempt: attempt["id"])


def backs_off(delivery: dict[str, Any], attempt: dict[str, Any]) -> float:
    """Seconds from the attempt to the next one."""
    started = datetime.fromisoformat(attempt["started_at"])
    return (datetime.fromisoformat(delivery["next_attempt_at"]) - started).total_seconds()


def test_wecom_gets_markdown_naming_object_tag_code_message_and_the_console_link(
    api: httpx.Client, platforms: Platforms
) -> None:
    delivery, _ = attempts(api, "wecom")
    assert delivery["state"] == "delivered"
    (message,) = platforms.to("ok-wecom-key-0123")
    assert message.body["msgtype"] == "markdown"
    content = message.body["markdown"]["content"]
    for shown in ("Transcode", "InvalidInput", "moov atom not found", f"{PUBLIC_URL}/console/jobs/{JOB}"):
        assert shown in content
    # COS's object key is shown, but neither mentions anyone nor becomes a link.
    assert "<@all>" not in content
    assert "[reset](" not in content
    assert "&lt;@all&gt;\\[reset\\](https://evil.example)" in content


def test_a_template_says_it_its_way_with_the_values_escaped_and_the_default_message_at_hand(
    api: httpx.Client, platforms: Platforms
) -> None:
    delivery, _ = attempts(api, "wecom-templated")
    assert delivery["state"] == "delivered"
    (message,) = platforms.to("ok-templated-key-0123")
    first, _, rest = message.body["markdown"]["content"].partition("\n")
    assert first.startswith("Transcode InvalidInput on ")
    assert first.endswith(" <@alice>")
    assert "<@all>" not in first
    assert f"{PUBLIC_URL}/console/jobs/{JOB}" in rest


def test_a_wecom_invalid_webhook_in_a_200_disables_the_robot_naming_it_although_answers_are_not_stored(
    api: httpx.Client,
) -> None:
    delivery, log = attempts(api, "wecom-bad")
    assert delivery["state"] == "pending"  # held for the subscriber's resume
    assert log[0]["status"] == 200
    assert log[0]["outcome"] == "robot_gone"
    assert log[0]["error"] == "wecom errcode 93000: invalid webhook url"
    assert log[0]["response_body"] == ""  # read to be understood, not kept: the subscriber stores no answers
    assert "bad-wecom-key" not in str(log)
    shown = api.get("/api/subscribers/wecom-bad").json()
    assert shown["state"] == "disabled"
    assert shown["disabled_reason"] == "the robot answered: wecom errcode 93000: invalid webhook url"


def test_a_wecom_rate_limit_code_backs_off_a_minute(api: httpx.Client) -> None:
    delivery, log = attempts(api, "wecom-limited")
    assert log[0]["outcome"] == "http_429"
    assert log[0]["error"] == "wecom errcode 45009: api freq out of limit"
    assert backs_off(delivery, log[0]) >= 59


def test_feishu_gets_a_card_signed_as_feishu_documents(api: httpx.Client, platforms: Platforms) -> None:
    delivery, _ = attempts(api, "feishu")
    assert delivery["state"] == "delivered"
    (message,) = platforms.to("ok-feishu-token-0123")
    assert message.verdict == "sent"
    assert message.body["msg_type"] == "interactive"
    card = message.body["card"]
    assert card["header"]["title"]["content"] == "COS Transcode job failed"
    assert card["header"]["template"] == "red"
    assert "InvalidInput" in card["elements"][0]["text"]["content"]


def test_a_feishu_signature_made_with_another_secret_is_a_failure_naming_19021(api: httpx.Client) -> None:
    delivery, log = attempts(api, "feishu-wrong-secret")
    assert delivery["state"] == "pending"
    assert log[0]["outcome"] == "http_4xx"
    assert log[0]["error"].startswith("feishu code 19021: sign match fail")
    assert "not-the-one" not in str(log)


def test_feishu_too_many_request_with_http_400_backs_off(api: httpx.Client) -> None:
    delivery, log = attempts(api, "feishu-limited")
    assert log[0]["status"] == 400
    assert log[0]["outcome"] == "http_429"
    assert log[0]["error"] == "feishu code 9499: too many request"
    assert backs_off(delivery, log[0]) >= 59


def test_dingtalk_gets_markdown_signed_in_the_query_as_dingtalk_documents(
    api: httpx.Client, platforms: Platforms
) -> None:
    delivery, _ = attempts(api, "dingtalk")
    assert delivery["state"] == "delivered"
    (message,) = platforms.to("ok-ding-0123")
    assert message.verdict == "sent"
    assert {"timestamp", "sign"} <= set(message.query)
    assert message.body["msgtype"] == "markdown"
    assert message.body["markdown"]["title"] == "COS Transcode job failed"
    assert "InvalidInput" in message.body["markdown"]["text"]


def test_an_unsigned_dingtalk_robot_gets_no_signature(api: httpx.Client, platforms: Platforms) -> None:
    delivery, _ = attempts(api, "dingtalk-unsigned")
    assert delivery["state"] == "delivered"
    (message,) = platforms.to("ok-ding-unsigned-0123")
    assert set(message.query) == {"access_token"}


def test_dingtalk_send_too_fast_backs_off_ten_minutes(api: httpx.Client) -> None:
    delivery, log = attempts(api, "dingtalk-limited")
    assert log[0]["outcome"] == "http_429"
    assert log[0]["error"].startswith("dingtalk errcode 130101: send too fast")
    assert backs_off(delivery, log[0]) >= 599


def test_slack_gets_a_mrkdwn_section_and_a_notification_text(api: httpx.Client, platforms: Platforms) -> None:
    delivery, _ = attempts(api, "slack")
    assert delivery["state"] == "delivered"
    (message,) = platforms.to("ok-slack-token-0123")
    assert message.body["text"] == "COS Transcode job failed"
    section = message.body["blocks"][0]["text"]
    assert section["type"] == "mrkdwn"
    assert f"<{PUBLIC_URL}/console/jobs/{JOB}|" in section["text"]
    assert "&lt;@all&gt;" in section["text"]


def test_a_slack_429_waits_out_retry_after_then_delivers(api: httpx.Client, platforms: Platforms) -> None:
    _, log = attempts(api, "slack-limited", count=2)
    assert [attempt["outcome"] for attempt in log] == ["http_429", "success"]
    assert log[0]["error"] == "slack 429: rate_limited"
    assert [message.verdict for message in platforms.to("limited-slack-token-0123")] == ["limited", "sent"]


def test_a_revoked_slack_url_disables_the_robot_naming_invalid_token(api: httpx.Client) -> None:
    delivery, log = attempts(api, "slack-bad")
    assert delivery["state"] == "pending"
    assert log[0]["outcome"] == "robot_gone"
    assert log[0]["error"] == "slack 403: invalid_token"
    shown = api.get("/api/subscribers/slack-bad").json()
    assert shown["state"] == "disabled"
    assert shown["disabled_reason"] == "the robot answered: slack 403: invalid_token"


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("{{ data.Tag ", "template: line 1: unexpected end of template"),
        ("ok\n{{ data.Tag | shout }}", "template: line 2: No filter named 'shout'"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "took longer"),
        ("{{ 'x' * 1000000 }}", "larger than 65536 characters"),
    ],
)
def test_a_template_that_fails_is_a_400_at_creation_and_at_update(api: httpx.Client, template: str, said: str) -> None:
    url = robots("http://127.0.0.1:9")["wecom"]["url"]
    created = api.post("/api/subscribers", json={"name": "refused", "kind": "wecom", "url": url, "template": template})
    assert created.status_code == 400
    assert said in created.json()["detail"]
    updated = api.patch("/api/subscribers/wecom", json={"template": template})
    assert updated.status_code == 400
    assert said in updated.json()["detail"]
