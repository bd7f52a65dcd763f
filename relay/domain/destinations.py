"""What a subscriber is, besides a URL: its kind (a webhook, a team chat robot, a message broker) and the limits
its receiver sets (a rate, the CloudEvents handshake, the content mode).

The rules here are the ones every edge shares (API, CLI, config file, console); how each kind is sent lives in
`relay.deliver`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from yarl import URL


class Kind(StrEnum):
    WEBHOOK = "webhook"
    WECOM = "wecom"
    FEISHU = "feishu"
    DINGTALK = "dingtalk"
    SLACK = "slack"
    RABBITMQ = "rabbitmq"
    NATS = "nats"
    REDIS = "redis"

    @property
    def robot(self) -> bool:
        """A team chat robot: a message for people, sent to the platform's webhook URL."""
        return self in ROBOTS

    @property
    def broker(self) -> bool:
        return self in BROKERS


ROBOTS = frozenset({Kind.WECOM, Kind.FEISHU, Kind.DINGTALK, Kind.SLACK})
BROKERS = frozenset({Kind.RABBITMQ, Kind.NATS, Kind.REDIS})
#: The URL schemes each kind's destination is written with.
SCHEMES: dict[Kind, tuple[str, ...]] = {
    **{kind: ("http", "https") for kind in (Kind.WEBHOOK, *ROBOTS)},
    Kind.RABBITMQ: ("amqp", "amqps"),
    Kind.NATS: ("nats", "tls"),
    Kind.REDIS: ("redis", "rediss"),
}
#: The port a URL of each scheme means when it names none.
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "amqp": 5672,
    "amqps": 5671,
    "nats": 4222,
    "tls": 4222,
    "redis": 6379,
    "rediss": 6379,
}
#: Robots whose platform signs with a secret of its own (optional there); the others carry no signature.
SIGNING_ROBOTS = frozenset({Kind.FEISHU, Kind.DINGTALK})


def parse_kind(value: str) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise ValueError(f"kind must be one of {', '.join(Kind)}; not {value!r}") from None


def check_scheme(kind: Kind, scheme: str) -> None:
    if scheme not in SCHEMES[kind]:
        whose = "" if kind is Kind.WEBHOOK else f" (a {kind} subscriber's url)"
        raise ValueError(f"scheme {scheme!r} is not {' or '.join(SCHEMES[kind])}{whose}")


class ContentMode(StrEnum):
    """CloudEvents HTTP content modes: the whole event as the body, or its data as the body and ``ce-*``
    headers for the attributes."""

    STRUCTURED = "structured"
    BINARY = "binary"


def parse_content_mode(value: str) -> ContentMode:
    try:
        return ContentMode(value)
    except ValueError:
        raise ValueError(f"content_mode must be structured or binary; not {value!r}") from None


@dataclass(frozen=True)
class Route:
    """How a claimed delivery is sent: what the delivery worker needs of its subscriber besides URL and
    secrets."""

    kind: Kind = Kind.WEBHOOK
    content_mode: ContentMode = ContentMode.STRUCTURED
    handshake: bool = False
    #: A robot's message template (None: the default message).
    template: str | None = None
    rate: Rate | None = None


WEBHOOK = Route()

_RATE = re.compile(r"([0-9]{1,6})/(s|m)")
#: Deliveries per second, at most: far above what one receiver takes, low enough that a typo is caught.
MAX_RATE_PER_SECOND = 10_000


@dataclass(frozen=True)
class Rate:
    """At most ``count`` deliveries started per ``per`` seconds (1 or 60), across every replica."""

    count: int
    per: int

    def __str__(self) -> str:
        return f"{self.count}/{'s' if self.per == 1 else 'm'}"

    @property
    def per_second(self) -> float:
        return self.count / self.per

    @property
    def interval(self) -> timedelta:
        """The time between two starts at the steady rate."""
        return timedelta(seconds=self.per / self.count)

    @property
    def burst(self) -> int:
        """Starts allowed at once after a quiet spell: one up to 10/s (evenly spaced), a tenth of a second's
        worth above, so a fast rate needs at most ten claim rounds a second."""
        return max(1, math.ceil(self.per_second / 10))

    def pace(self, now: datetime, free_at: datetime | None, wanted: int) -> Pacing:
        """How many of ``wanted`` deliveries may start at ``now`` when the next start was free at ``free_at``
        (None: never paced), and when the one after those may start (GCRA: any span of ``per`` seconds holds
        at most ``count + burst`` starts)."""
        slack = self.interval * (self.burst - 1)
        # The theoretical arrival time of the next start, never in the past: a quiet spell earns no more than
        # the burst.
        due = now if free_at is None else max(now, free_at + slack)
        if due - slack > now or wanted <= 0:
            return Pacing(0, due - slack)
        allowed = min(wanted, (now + slack - due) // self.interval + 1)
        return Pacing(allowed, due + self.interval * allowed - slack)


@dataclass(frozen=True)
class Pacing:
    """What a rate allows now: how many starts, and from when the next one is free."""

    allowed: int
    free_at: datetime


def parse_rate(value: str) -> Rate:
    """``"10/s"`` or ``"600/m"``; ValueError naming the form otherwise."""
    match = _RATE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f'rate is a count per second or minute, like "10/s" or "600/m"; not {value!r}')
    rate = Rate(int(match[1]), 1 if match[2] == "s" else 60)
    if not rate.count >= 1 or rate.per_second > MAX_RATE_PER_SECOND:
        raise ValueError(f"rate must be from 1/m to {MAX_RATE_PER_SECOND}/s")
    return rate


def check_kind_options(kind: Kind, *, handshake: bool, content_mode: ContentMode, template: str | None) -> None:
    """ValueError for an option the kind has no use for: silently ignoring it would look like it worked."""
    if handshake and kind is not Kind.WEBHOOK:
        raise ValueError("handshake is for webhook subscribers (robots and brokers have no CloudEvents handshake)")
    if content_mode is ContentMode.BINARY and kind.robot:
        raise ValueError("content_mode is for webhook and broker subscribers; a robot gets a chat message")
    if template is not None and not kind.robot:
        raise ValueError("template is for robot subscribers (wecom, feishu, dingtalk, slack)")


def _masked(value: str) -> str:
    """The first 4 characters of a long credential, enough to tell two apart; none of a short one."""
    return f"{value[:4]}***" if len(value) >= 16 else "***"


def shown_url(kind: Kind, url: str) -> str:
    """``url`` as the API, CLI, console and logs may show it. A robot's URL is its credential: WeCom's ``key`` and
    DingTalk's ``access_token`` in the query, Feishu's and Slack's token as the last path segment. A broker's may
    hold a password."""
    if kind is Kind.WEBHOOK:
        return url
    parsed = URL(url)
    if kind.broker:
        return str(parsed.with_password("***")) if parsed.password else url
    origin = str(parsed.origin())
    if parsed.query:
        query = "&".join(f"{key}={_masked(value)}" for key, value in parsed.query.items())
        return f"{origin}{parsed.raw_path}?{query}"
    head, _, token = parsed.raw_path.rpartition("/")
    return f"{origin}{head}/{_masked(token)}"


@dataclass(frozen=True)
class Handshake:
    """A receiver's answer to the CloudEvents abuse-protection handshake, for one subscriber and URL."""

    subscriber_id: int
    url: str
    granted: bool
    #: What the receiver allowed (``WebHook-Allowed-Rate``, per minute); None: no limit (absent or ``*``).
    allowed_rate: Rate | None
    #: Why it was refused, or what it granted, in a line.
    detail: str
    checked_at: datetime
    #: Until when a grant holds; asked again after (a refusal is asked again at the next attempt).
    expires_at: datetime

    def holds(self, url: str, now: datetime) -> bool:
        return self.granted and self.url == url and now < self.expires_at


#: How a subscriber's handshake stands, as the API shows it.
HANDSHAKE_STATES = ("granted", "refused", "pending")


def handshake_verdict(last: Handshake | None, url: str) -> dict[str, Any]:
    """The verdict of a subscriber that asks for the handshake, now at ``url``, as the API and CLI show it.

    ``pending`` until its receiver has answered at that URL (never asked yet, or asked at a URL since changed: it
    is asked again before the next delivery). ``expires_at`` is a grant's (a refusal is asked again at the next
    attempt). Never the URL the verdict was for: it may hold a credential.
    """
    if last is None or last.url != url:
        return {"state": "pending", "checked_at": None, "expires_at": None, "allowed_rate": None, "detail": None}
    return {
        "state": "granted" if last.granted else "refused",
        "checked_at": last.checked_at.isoformat(),
        "expires_at": last.expires_at.isoformat() if last.granted else None,
        "allowed_rate": None if last.allowed_rate is None else str(last.allowed_rate),
        "detail": last.detail,
    }


def slowest(*rates: Rate | None) -> Rate | None:
    """The strictest of the rates given (None: no limit)."""
    given = [rate for rate in rates if rate is not None]
    return min(given, key=lambda rate: rate.per_second) if given else None
