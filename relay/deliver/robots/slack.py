"""Slack incoming webhook: a mrkdwn section with a plain fallback text; no signature (the URL is the credential).
Slack answers with its status and a short text (``ok``, ``invalid_token``, ``no_service``, ...)."""

from __future__ import annotations

from typing import Any

from relay.deliver.robots.messages import Message
from relay.deliver.robots.platform import MAX_ERROR, Platform, failure
from relay.domain.delivery import Attempt, Outcome
from relay.domain.destinations import Kind

#: Characters of a section's text, at most (Slack answers 400 past 3000).
MAX_TEXT = 3000
#: Slack's words for a webhook that is no more: its token revoked (403), the integration removed or its channel
#: deleted (404), its channel archived (410). Not ``action_prohibited`` (a workspace's restriction, lifted there).
GONE = frozenset({"invalid_token", "no_service", "channel_not_found", "channel_is_archived"})


def escaped(text: str) -> str:
    """Slack's three control characters: what keeps a value from mentioning a channel (``<!channel>``) or
    linking."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Slack(Platform):
    kind = Kind.SLACK

    def escape(self, text: str) -> str:
        return escaped(text)

    def markdown(self, message: Message) -> str:
        lines = [f"*{self.escape(message.title)}*"]
        lines += [f"*{label}:* {self.escape(value)}" for label, value in message.facts]
        if message.link:
            lines.append(f"<{message.link}|Open in cos-relay>")
        return "\n".join(lines)

    def payload(self, message: Message, text: str, event_id: str) -> dict[str, Any]:
        cut = text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
        # With blocks, text is what notifications show.
        section = {"type": "section", "text": {"type": "mrkdwn", "text": cut}}
        return {"text": escaped(message.title), "blocks": [section]}

    def answer(self, attempt: Attempt) -> Attempt:
        if attempt.status is None:
            return attempt
        said = attempt.response_body[:MAX_ERROR].decode(errors="replace").strip()
        if attempt.status == 429 or said == "rate_limited":
            return failure(attempt, Outcome.HTTP_429, f"slack {attempt.status}: {said or 'rate limited'}")
        if attempt.outcome is Outcome.SUCCESS:
            return attempt
        outcome = Outcome.ROBOT_GONE if said in GONE else attempt.outcome
        return failure(attempt, outcome, f"slack {attempt.status}: {said}")
