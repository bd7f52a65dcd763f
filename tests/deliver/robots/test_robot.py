"""A robot destination through the delivery seams (fake sender, fake clock): what goes out, and what is recorded."""

from __future__ import annotations

import json

import pytest

from relay.domain.destinations import Kind
from tests.conftest import DATA, Outbox
from tests.fakes import Reply, Request

SNAPSHOT = (DATA / "samples" / "snapshot_success.xml").read_bytes()
FAILED = (DATA / "samples" / "transcode_failed.xml").read_bytes()
KEY = "ok-wecom-key-0123456789"
#: Passes the check on the sample events, fails on a snapshot.
BREAKS_ON_SNAPSHOTS = "{% if data.Tag == 'Snapshot' %}{{ 1 / 0 }}{% endif %}{{ data.Tag }} done"

pytestmark = pytest.mark.anyio


def wecom(request: Request) -> Reply:
    """WeCom answering every request; a key starting ``echo`` gets an error message that quotes the key."""
    key = request.url.partition("key=")[2]
    if key.startswith("echo"):
        return Reply(200, body=json.dumps({"errcode": 40058, "errmsg": f"bad request for key {key}"}).encode())
    return Reply(200, body=b'{"errcode":0,"errmsg":"ok"}')


@pytest.mark.parametrize(
    ("kind", "path", "answer"),
    [
        (Kind.WECOM, f"/cgi-bin/webhook/send?key={KEY}", b'{"errcode":0,"errmsg":"ok"}'),
        (Kind.FEISHU, "/open-apis/bot/v2/hook/token-0123456789", b'{"code":0,"msg":"success"}'),
        (Kind.DINGTALK, "/robot/send?access_token=token-0123456789", b'{"errcode":0,"errmsg":"ok"}'),
        (Kind.SLACK, "/services/T0/B0/token-0123456789", b"ok"),
    ],
)
async def test_every_robot_kind_is_delivered(outbox: Outbox, kind: Kind, path: str, answer: bytes) -> None:
    outbox.sender.handler = lambda request: Reply(200, body=answer)
    outbox.add("team", path, kind=kind)
    await outbox.ingest(FAILED)
    await outbox.step()
    assert len(outbox.sender.requests) == 1
    assert outbox.states() == ["delivered"]


async def test_a_robot_posts_json_for_people_not_a_signed_cloudevent(outbox: Outbox) -> None:
    outbox.sender.handler = wecom
    outbox.add("team", f"/cgi-bin/webhook/send?key={KEY}", kind=Kind.WECOM)
    await outbox.ingest(FAILED)
    await outbox.step()
    (request,) = outbox.sender.requests
    assert request.headers["Content-Type"].startswith("application/json")
    assert not any(name.startswith("webhook-") for name in request.headers)
    assert "InvalidInput" in json.loads(request.body)["markdown"]["content"]
    assert outbox.states() == ["delivered"]


async def test_a_template_failing_on_an_event_sends_the_default_message_saying_so(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.sender.handler = wecom
    outbox.add("team", f"/cgi-bin/webhook/send?key={KEY}", kind=Kind.WECOM, template=BREAKS_ON_SNAPSHOTS)
    await outbox.ingest(SNAPSHOT)
    await outbox.step()
    content = json.loads(outbox.sender.requests[0].body)["markdown"]["content"]
    assert "COS Snapshot job succeeded" in content
    assert content.endswith("(this subscriber's template failed: line 1: division by zero)")
    assert outbox.states() == ["delivered"]  # nothing lost for a template's mistake
    assert "the template of team failed" in caplog.text


async def test_a_platform_error_quoting_the_robot_key_is_recorded_without_it(outbox: Outbox) -> None:
    outbox.sender.handler = wecom
    key = "echo-wecom-key-0123456789"
    outbox.add("team", f"/cgi-bin/webhook/send?key={key}", kind=Kind.WECOM, store_response=True)
    await outbox.ingest(FAILED)
    await outbox.step()
    (delivery,) = outbox.deliveries()
    assert delivery["id"] is not None  # its failure made it a row
    (attempt,) = outbox.store.get_delivery(delivery["id"])["attempts_log"]  # type: ignore[index]
    assert attempt["outcome"] == "http_4xx"
    assert attempt["error"] == "wecom errcode 40058: bad request for key ***"
