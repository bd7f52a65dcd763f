"""A chat robot as a destination: the event said as a message in the platform's markup, signed the platform's way,
POSTed through the SSRF-guarded sender, and the platform's answer understood."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio
import orjson
from yarl import URL

from relay.deliver.client import Sender
from relay.deliver.robots.messages import describe
from relay.deliver.robots.platform import Platform
from relay.deliver.robots.sandbox import TemplateFailed
from relay.deliver.robots.templates import Templates
from relay.domain.delivery import Attempt, Claim

logger = logging.getLogger(__name__)

JSON = {"Content-Type": "application/json; charset=utf-8"}
#: Shorter values are not taken for credentials when scrubbing an error (they would match ordinary words).
_CREDENTIAL = 8


def _credentials(url: str, secrets: tuple[str, ...]) -> list[str]:
    """What of a robot's URL and secret must never reach the attempt log: the query's values (WeCom's key,
    DingTalk's access_token), the last path segment (Feishu's and Slack's token), the signing secret."""
    parsed = URL(url)
    found = [*parsed.query.values(), parsed.path.rpartition("/")[2], *secrets]
    return [value for value in found if len(value) >= _CREDENTIAL]


class Robot:
    """Sends each claim as a chat message to one platform's robot."""

    def __init__(self, sender: Sender, platform: Platform, public_url: str | None) -> None:
        self._sender = sender
        self._platform = platform
        self._public_url = public_url
        self._templates = Templates(platform.escape)

    async def start(self) -> None:
        """Nothing of its own: the sender is the webhook destination's, started and closed with it."""

    async def close(self) -> None:
        """As `start`."""

    async def send(self, claim: Claim, at: datetime) -> Attempt:
        parsed = orjson.loads(claim.body)
        event: Mapping[str, Any] = parsed if isinstance(parsed, dict) else {}
        message = describe(event, self._public_url)
        text = self._platform.markdown(message)
        if claim.route.template is not None:
            try:
                # On a thread: the delivery loop must not wait out a render's deadline (nor run its trace function).
                text = await anyio.to_thread.run_sync(
                    self._templates.render, claim.route.template, event, message, text
                )
            except TemplateFailed as error:
                # Nothing lost: the default message goes, saying why the subscriber's own did not.
                logger.warning(
                    "the template of %s failed (%s): sent the default message",
                    claim.subscriber,
                    error,
                    extra={"action": "robot_template_failed", "subscriber": claim.subscriber},
                )
                text += "\n" + self._platform.escape(f"(this subscriber's template failed: {error})")
        payload = self._platform.payload(message, text, claim.event_id)
        url, payload = self._platform.signed(claim.url, payload, claim.secrets[0] if claim.secrets else "", at)
        attempt = await self._sender.send(url, orjson.dumps(payload), JSON, timeout=claim.timeout)
        answered = self._platform.answer(attempt)
        if answered.error:
            said = answered.error
            for credential in _credentials(claim.url, claim.secrets):
                said = said.replace(credential, "***")
            answered = dataclasses.replace(answered, error=said)
        return answered
