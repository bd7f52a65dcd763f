"""Subscribers: who gets events, how they are signed, how hard we try."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from relay.domain.destinations import ContentMode, Kind, Rate, check_kind_options, check_scheme, shown_url
from relay.domain.filters import Filter
from relay.domain.retry import check_schedule

#: Standard Webhooks secrets start with this.
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
DEFAULT_TIMEOUT = 15.0
DEFAULT_MAX_IN_FLIGHT = 8
#: Deliveries in flight at once to one subscriber.
MAX_IN_FLIGHT = (1, 256)
#: Seconds per attempt, both inclusive: a tenth of a second is already shorter than any TLS handshake abroad,
#: and a denormal such as 1e-320 would time every attempt out before it starts.
TIMEOUTS = (0.1, 120.0)
#: Characters in a subscriber URL, at most (what common proxies and servers accept in a request line).
MAX_URL = 2048
#: C0 and C1 control characters and DEL: PostgreSQL stores no NUL, the HTTP client would send %00 instead, and a
#: newline or tab in a URL is never what was meant.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def mask_secret(secret: str) -> str:
    """``whsec_abcd…``: enough to tell secrets apart in logs and the API, never more than 4 characters."""
    prefix = SECRET_PREFIX if secret.startswith(SECRET_PREFIX) else ""
    body = secret.removeprefix(SECRET_PREFIX)
    # A short secret would be mostly revealed by 4 characters: show none.
    shown = body[:4] if len(body) >= 16 else ""
    return f"{prefix}{shown}…"


class SubscriberState(StrEnum):
    ENABLED = "enabled"
    #: Held by an operator: deliveries wait, nothing is lost.
    PAUSED = "paused"
    #: Held by the gateway (410 Gone, or failing for too long): deliveries wait until resumed.
    DISABLED = "disabled"


@dataclass(frozen=True)
class Subscriber:
    """One downstream endpoint and everything about how events reach it."""

    id: int
    name: str
    url: str
    secret: str
    filter: Filter
    state: SubscriberState = SubscriberState.ENABLED
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    timeout: float = DEFAULT_TIMEOUT
    #: None means the gateway's schedule.
    retry_schedule: tuple[float, ...] | None = None
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    disabled_reason: str | None = None
    failing_since: datetime | None = None
    created_at: datetime | None = None
    source: str = "api"
    #: Keep the first 4 KiB of each answer with its attempt (for the API, CLI and console to show).
    store_response: bool = False
    kind: Kind = Kind.WEBHOOK
    #: Deliveries started per second or minute, across replicas (None: only ``max_in_flight`` limits).
    rate: Rate | None = None
    #: Ask the receiver first (the CloudEvents abuse-protection handshake) and honour what it allows.
    handshake: bool = False
    content_mode: ContentMode = ContentMode.STRUCTURED
    #: A robot's own message template (None: the default message per event type).
    template: str | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, then the previous one while its grace period lasts."""
        secrets = [self.secret]
        if self.previous_secret and self.previous_secret_expires_at and now < self.previous_secret_expires_at:
            secrets.append(self.previous_secret)
        return secrets

    def public(self, *, reveal_secret: bool = False) -> dict[str, Any]:
        """The JSON the API and CLI show: the secret masked unless it was just created."""
        return {
            "name": self.name,
            "url": shown_url(self.kind, self.url),
            "state": self.state.value,
            "secret": self.secret if reveal_secret else mask_secret(self.secret),
            "types": list(self.filter.types),
            "filters": dict(self.filter.match),
            "max_in_flight": self.max_in_flight,
            "timeout": self.timeout,
            "retry_schedule": list(self.retry_schedule) if self.retry_schedule is not None else None,
            "disabled_reason": self.disabled_reason,
            "failing_since": self.failing_since.isoformat() if self.failing_since else None,
            "previous_secret_expires_at": (
                self.previous_secret_expires_at.isoformat() if self.previous_secret_expires_at else None
            ),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "source": self.source,
            "store_response": self.store_response,
            "kind": self.kind.value,
            "rate": None if self.rate is None else str(self.rate),
            "handshake": self.handshake,
            "content_mode": self.content_mode.value,
            "template": self.template,
        }


@dataclass(frozen=True)
class SubscriberSpec:
    """What a user asks for when creating a subscriber (CLI, API or the TOML config)."""

    name: str
    url: str
    secret: str
    filter: Filter
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    timeout: float = DEFAULT_TIMEOUT
    retry_schedule: tuple[float, ...] | None = None
    source: str = "api"
    store_response: bool = False
    kind: Kind = Kind.WEBHOOK
    rate: Rate | None = None
    handshake: bool = False
    content_mode: ContentMode = ContentMode.STRUCTURED
    template: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        check_url(self.url)
        check_scheme(self.kind, self.url.partition(":")[0].lower())
        check_kind_options(self.kind, handshake=self.handshake, content_mode=self.content_mode, template=self.template)
        check_limits(self.max_in_flight, self.timeout, self.retry_schedule)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError("a subscriber name is 1-63 characters of a-z, 0-9, '.', '_' and '-', starting alphanumeric")
    return name


def check_url(url: str) -> str:
    """ValueError unless ``url`` is at most `MAX_URL` characters with no control character: the same refusal
    whichever backend stores it and whichever edge it came through (its scheme and host: `vet_destination`)."""
    if len(url) > MAX_URL:
        raise ValueError(f"url is {len(url)} characters; at most {MAX_URL}")
    control = _CONTROL.search(url)
    if control is not None:
        raise ValueError(f"url holds the control character U+{ord(control.group()):04X} at position {control.start()}")
    return url


def check_text(value: str, what: str) -> str:
    """ValueError unless ``value`` holds no control character (a filter value, say)."""
    control = _CONTROL.search(value)
    if control is not None:
        raise ValueError(f"{what} holds the control character U+{ord(control.group()):04X}")
    return value


def check_limits(max_in_flight: object, timeout: object, schedule: Sequence[object] | None) -> None:
    """ValueError naming the field unless each is a number (never a boolean) within its range."""
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
        raise ValueError("max_in_flight must be a whole number")
    if not MAX_IN_FLIGHT[0] <= max_in_flight <= MAX_IN_FLIGHT[1]:
        raise ValueError(f"max_in_flight must be from {MAX_IN_FLIGHT[0]} to {MAX_IN_FLIGHT[1]}")
    # Compared as given, never float() first: a TOML integer of 400 digits would overflow.
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not TIMEOUTS[0] <= timeout <= TIMEOUTS[1]:
        raise ValueError(f"timeout must be from {TIMEOUTS[0]:g} to {TIMEOUTS[1]:g} seconds")
    if schedule is not None:
        check_schedule(schedule)
