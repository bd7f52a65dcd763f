"""WeCom group robot (企业微信群机器人): a markdown message; no signature (the URL's ``key`` is the credential)."""

from __future__ import annotations

from typing import Any

from relay.deliver.robots.messages import Message
from relay.deliver.robots.platform import Platform, coded, cut_bytes, parsed
from relay.domain.delivery import Attempt
from relay.domain.destinations import Kind

#: Bytes of a markdown message's content, at most: WeCom refuses a longer one (errcode 40058), it does not cut it.
MAX_CONTENT = 4096
#: 45009 ("api freq out of limit") is WeCom's rate-limit code (unverified for robots); a robot takes 20 a minute.
PAUSES: dict[int, float | None] = {45009: 60.0}
#: 93000 "invalid webhook url": no robot has that key (a wrong one, or the robot was removed); every message
#: would get the same answer.
GONE = frozenset({93000})
_COLOURS = {"failure": "warning", "success": "info", "neutral": "comment"}


class WeCom(Platform):
    kind = Kind.WECOM

    def markdown(self, message: Message) -> str:
        lines = [f'<font color="{_COLOURS[message.tone]}">**{self.escape(message.title)}**</font>']
        lines += [f"> {label}: {self.escape(value)}" for label, value in message.facts]
        if message.link:
            lines.append(f"[Open in cos-relay]({message.link})")
        return "\n".join(lines)

    def payload(self, message: Message, text: str, event_id: str) -> dict[str, Any]:
        return {"msgtype": "markdown", "markdown": {"content": cut_bytes(text, MAX_CONTENT)}}

    def answer(self, attempt: Attempt) -> Attempt:
        if attempt.status is None:
            return attempt
        body = parsed(attempt.response_body) or {}
        return coded(attempt, "wecom", "errcode", body.get("errcode"), body.get("errmsg"), PAUSES, GONE)
