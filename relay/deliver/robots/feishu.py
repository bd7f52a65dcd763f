"""Feishu / Lark custom bot (飞书自定义机器人): an interactive card; signed with ``timestamp`` and ``sign`` in the
body when the bot has a secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any

from relay.deliver.robots.messages import Message
from relay.deliver.robots.platform import Platform, coded, cut_bytes, parsed
from relay.domain.delivery import Attempt
from relay.domain.destinations import Kind

#: Bytes of the card's text, at most: Feishu takes a body of 20 KB.
MAX_TEXT = 16384
#: 11232 and 9499 "too many request" are Feishu's rate limits (5 a second, 100 a minute per bot).
PAUSES: dict[int, float | None] = {11232: 60.0}
TOO_MANY = 9499
_TEMPLATES = {"failure": "red", "success": "green", "neutral": "blue"}


def sign(secret: str, timestamp: int) -> str:
    """base64 of HMAC-SHA256 keyed with ``"{timestamp}\\n{secret}"`` (timestamp in seconds) over nothing."""
    digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class Feishu(Platform):
    kind = Kind.FEISHU

    def markdown(self, message: Message) -> str:
        lines = [f"**{label}**: {self.escape(value)}" for label, value in message.facts]
        if message.link:
            lines.append(f"[Open in cos-relay]({message.link})")
        return "\n".join(lines)

    def payload(self, message: Message, text: str, event_id: str) -> dict[str, Any]:
        header = {"title": {"tag": "plain_text", "content": message.title}, "template": _TEMPLATES[message.tone]}
        element = {"tag": "div", "text": {"tag": "lark_md", "content": cut_bytes(text, MAX_TEXT)}}
        return {"msg_type": "interactive", "card": {"header": header, "elements": [element]}}

    def signed(self, url: str, payload: dict[str, Any], secret: str, at: datetime) -> tuple[str, dict[str, Any]]:
        if not secret:
            return url, payload
        timestamp = int(at.timestamp())
        return url, {"timestamp": str(timestamp), "sign": sign(secret, timestamp), **payload}

    def answer(self, attempt: Attempt) -> Attempt:
        if attempt.status is None:
            return attempt
        body = parsed(attempt.response_body) or {}
        # Newer answers say code/msg; older ones StatusCode/StatusMessage (some keep both).
        code = body.get("code", body.get("StatusCode"))
        message = body.get("msg", body.get("StatusMessage"))
        pauses = PAUSES
        if code == TOO_MANY and "too many" in str(message).lower():  # 9499 is also "Bad Request"
            pauses = {**PAUSES, TOO_MANY: 60.0}
        # No gone codes: Feishu's for a deleted bot or a wrong token is undocumented (the reference: unverified), so
        # none disables the subscriber; 19021, 19022 and 19024 are the bot's security settings, retried.
        return coded(attempt, "feishu", "code", code, message, pauses)
