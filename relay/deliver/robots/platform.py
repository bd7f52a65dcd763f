"""What each chat platform does its own way: the markup of a message, the body, the signature and the answer.

The facts (URLs, bodies, signing recipes, error codes) are those of /work/shared/reference/chat-robots.md and
docs/configuration.md's robot section, where each is sourced.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import orjson

from relay.deliver.robots.messages import Message
from relay.domain.delivery import Attempt, Outcome
from relay.domain.destinations import Kind

#: Characters of a platform's error message kept in the attempt log.
MAX_ERROR = 160


def cut_bytes(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` bytes of UTF-8, cut at a character and marked with an ellipsis."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


def backslashed(text: str) -> str:
    """Markdown's link, emphasis and code characters escaped; ``<`` and ``>`` as entities, so a value can neither
    mention anyone (``<@all>``, ``<at id=all>``) nor open a tag."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for special in "\\`*_[]":
        text = text.replace(special, f"\\{special}")
    return text


def parsed(body: bytes) -> dict[str, Any] | None:
    """The answer's JSON object, or None for anything else (HTML from a proxy, a cut-off body)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def failure(attempt: Attempt, outcome: Outcome, error: str, retry_after: float | None = None) -> Attempt:
    """``attempt`` as the platform's answer makes it: its outcome, and the platform's code and message."""
    error = " ".join(error.split())[:MAX_ERROR]
    return dataclasses.replace(attempt, outcome=outcome, error=error, retry_after=retry_after or attempt.retry_after)


class Platform:
    """One chat platform; subclasses override what their platform does otherwise."""

    kind: Kind

    def escape(self, text: str) -> str:
        return backslashed(text)

    def markdown(self, message: Message) -> str:
        """The default message in the platform's markup."""
        raise NotImplementedError

    def payload(self, message: Message, text: str, event_id: str) -> dict[str, Any]:
        """The JSON body sending ``text`` (the default message's markup, or a template's output)."""
        raise NotImplementedError

    def signed(self, url: str, payload: dict[str, Any], secret: str, at: datetime) -> tuple[str, dict[str, Any]]:
        """URL and body with the platform's own signature (``secret`` '' for an unsigned robot)."""
        return url, payload

    def answer(self, attempt: Attempt) -> Attempt:
        """The attempt as the platform's answer means it: an error code in a 200 is a failure."""
        raise NotImplementedError


def coded(
    attempt: Attempt,
    name: str,
    field: str,
    code: object,
    message: object,
    pauses: dict[int, float | None],
    gone: frozenset[int] = frozenset(),
) -> Attempt:
    """The answer of a platform that says how it went with a code in the body (0: sent), whatever the status:
    a code in ``pauses`` is its rate limit (back off that many seconds; None: the retry schedule), one in
    ``gone`` says the robot's webhook is no more (`Outcome.ROBOT_GONE`: disabled like a 410), any other a
    failure naming the code (``field``: what the platform calls it)."""
    text = str(message or "").split(", hint:")[0]  # WeCom appends a hint, the caller's IP and a link
    if code == 0:
        return attempt
    if not isinstance(code, int) or isinstance(code, bool):
        if attempt.outcome is not Outcome.SUCCESS:
            return attempt  # an error page from something in between: the status says enough
        return failure(attempt, Outcome.HTTP_5XX, f"{name} answered {attempt.status} without {field}")
    if code in pauses:
        return failure(attempt, Outcome.HTTP_429, f"{name} {field} {code}: {text}", pauses[code])
    if code in gone:
        return failure(attempt, Outcome.ROBOT_GONE, f"{name} {field} {code}: {text}")
    outcome = Outcome.HTTP_4XX if attempt.outcome is Outcome.SUCCESS else attempt.outcome
    return failure(attempt, outcome, f"{name} {field} {code}: {text}")
