"""DingTalk custom robot (钉钉自定义机器人): a markdown message; signed (加签) with ``timestamp`` and ``sign`` in the
query when the robot has a secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus

from relay.deliver.robots.messages import Message
from relay.deliver.robots.platform import Platform, coded, cut_bytes, parsed
from relay.domain.delivery import Attempt
from relay.domain.destinations import Kind

#: Bytes of a markdown text, at most (DingTalk documents no limit: unverified, kept to WeCom's).
MAX_TEXT = 4096
#: Characters of the title (the chat list's preview).
MAX_TITLE = 64
#: 130101 "send too fast, exceed 20 times per minute": the robot is throttled for 10 minutes.
PAUSES: dict[int, float | None] = {130101: 600.0}
#: 300001 and 300005 "token is not exist": no robot has that access_token (a wrong one, or the robot was removed).
GONE = frozenset({300001, 300005})


def sign(secret: str, timestamp: int) -> str:
    """base64 of HMAC-SHA256 keyed with the secret over ``"{timestamp}\\n{secret}"`` (timestamp in ms), before
    URL-encoding."""
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class DingTalk(Platform):
    kind = Kind.DINGTALK

    def markdown(self, message: Message) -> str:
        lines = [f"#### {self.escape(message.title)}", ""]
        lines += [f"- **{label}**: {self.escape(value)}" for label, value in message.facts]
        if message.link:
            lines += ["", f"[Open in cos-relay]({message.link})"]
        return "\n".join(lines)

    def payload(self, message: Message, text: str, event_id: str) -> dict[str, Any]:
        return {
            "msgtype": "markdown",
            "markdown": {"title": message.title[:MAX_TITLE], "text": cut_bytes(text, MAX_TEXT)},
            # DingTalk's idempotency key: a retry after a timeout does not post the message twice.
            "msgUuid": event_id,
        }

    def signed(self, url: str, payload: dict[str, Any], secret: str, at: datetime) -> tuple[str, dict[str, Any]]:
        if not secret:
            return url, payload
        timestamp = int(at.timestamp() * 1000)
        separator = "&" if "?" in url else "?"
        return f"{url}{separator}timestamp={timestamp}&sign={quote_plus(sign(secret, timestamp))}", payload

    def answer(self, attempt: Attempt) -> Attempt:
        if attempt.status is None:
            return attempt
        body = parsed(attempt.response_body) or {}
        return coded(attempt, "dingtalk", "errcode", body.get("errcode"), body.get("errmsg"), PAUSES, GONE)
