"""The kinds of value a setting takes: how each reads an operator's text, checks a value and shows it.

Every kind raises ValueError with one line that says what was wrong and which form is accepted, so the
command line, the environment and `Settings` itself all refuse a bad value the same way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from relay.domain import numbers, tokens
from relay.domain.retry import MAX_STEPS, check_schedule, parse_schedule

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Kind:
    """One kind of setting value. ``parse`` reads text (CLI or environment); ``check`` judges a value."""

    @property
    def metavar(self) -> str:
        """Placeholder for the value in ``--help``."""
        return "TEXT"

    @property
    def form(self) -> str:
        """The accepted form, as a noun phrase: "an integer >= 1"."""
        return "text"

    def convert(self, text: str) -> Any:
        return text

    def check(self, value: Any) -> None:
        """ValueError unless ``value`` is acceptable."""

    def parse(self, text: str) -> Any:
        value = self.convert(text.strip())
        self.check(value)
        return value

    def show(self, value: Any) -> str:
        """``value`` as an operator would write it (defaults in ``--help`` and the reference)."""
        return str(value)


@dataclass(frozen=True)
class Text(Kind):
    """Free text; ``required`` refuses an empty value."""

    required: bool = True

    @property
    def form(self) -> str:
        return "non-empty text" if self.required else "text"

    def check(self, value: Any) -> None:
        if not isinstance(value, str) or (self.required and not value):
            raise ValueError(f"{value!r} is not {self.form}")


@dataclass(frozen=True)
class Token(Kind):
    """A secret an operator configures: refused unless it is random enough (`relay.domain.tokens`). Errors
    never quote it."""

    @property
    def form(self) -> str:
        return f"a random token of at least {tokens.MIN_BITS} bits"

    def check(self, value: Any) -> None:
        if not isinstance(value, str):
            raise ValueError(f"the value is not {self.form}")
        weak = tokens.weakness(value)
        if weak is not None:
            raise ValueError(weak)


@dataclass(frozen=True)
class Url(Kind):
    @property
    def metavar(self) -> str:
        return "URL"

    @property
    def form(self) -> str:
        return "an http:// or https:// URL"

    def check(self, value: Any) -> None:
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not {self.form}")


@dataclass(frozen=True)
class Integer(Kind):
    minimum: int | None = None
    maximum: int | None = None

    @property
    def metavar(self) -> str:
        return "INTEGER"

    @property
    def form(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"an integer from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"an integer >= {self.minimum}"
        return "an integer"

    def convert(self, text: str) -> Any:
        value = numbers.ascii_whole(text)
        if value is None:
            raise ValueError(f"{text!r} is not {self.form}")
        return value

    def check(self, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
        ):
            raise ValueError(f"{value!r} is not {self.form}")


@dataclass(frozen=True)
class Seconds(Kind):
    """A finite number of seconds up to ``maximum``, written as seconds or in the one grammar of durations (``90s``,
    ``5m``, ``2h``, ``1d``); ``zero`` says whether 0 itself is allowed."""

    zero: bool = False
    maximum: float = 3600.0

    @property
    def metavar(self) -> str:
        return "SECONDS"

    @property
    def form(self) -> str:
        low = "from 0" if self.zero else "more than 0"
        return f"a number of seconds (or a duration like 90s, 5m or 2h) {low} to {numbers.span_text(self.maximum)}"

    def convert(self, text: str) -> Any:
        value = numbers.ascii_span(text)
        if value is None:
            value = numbers.ascii_decimal(text)
        if value is None:
            raise ValueError(f"{text!r} is not {self.form}")
        return value

    def check(self, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
            or (value == 0 and not self.zero)
            or value > self.maximum
        ):
            raise ValueError(f"{value!r} is not {self.form}")

    def show(self, value: Any) -> str:
        return f"{value:g}"


@dataclass(frozen=True)
class Flag(Kind):
    @property
    def metavar(self) -> str:
        return "BOOLEAN"

    @property
    def form(self) -> str:
        return "one of " + "/".join(_TRUE) + " or " + "/".join(_FALSE)

    def convert(self, text: str) -> Any:
        word = text.lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"{text!r} is not {self.form}")

    def check(self, value: Any) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not {self.form}")

    def show(self, value: Any) -> str:
        return "on" if value else "off"


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...]

    @property
    def metavar(self) -> str:
        return "[" + "|".join(self.choices) + "]"

    @property
    def form(self) -> str:
        return "one of " + ", ".join(self.choices)

    def convert(self, text: str) -> Any:
        return text.lower()

    def check(self, value: Any) -> None:
        if value not in self.choices:
            raise ValueError(f"{value!r} is not {self.form}")


@dataclass(frozen=True)
class File(Kind):
    """A file path; ``exists`` refuses a path that is not an existing file when it is read."""

    exists: bool = False

    @property
    def metavar(self) -> str:
        return "FILE"

    @property
    def form(self) -> str:
        return "the path of an existing file" if self.exists else "a file path"

    def convert(self, text: str) -> Any:
        path = Path(text)
        if path.is_dir():
            raise ValueError(f"{text!r} is a directory, not a file")
        if self.exists and not path.exists():
            raise ValueError(f"file {text!r} does not exist")
        return path

    def check(self, value: Any) -> None:
        if not isinstance(value, Path):
            raise ValueError(f"{value!r} is not {self.form}")


@dataclass(frozen=True)
class Schedule(Kind):
    @property
    def metavar(self) -> str:
        return "5,300,1800"

    @property
    def form(self) -> str:
        return f"1 to {MAX_STEPS} comma-separated delays like 5s, 5m or 2h (or seconds), each from 0 to 7d"

    def convert(self, text: str) -> Any:
        return parse_schedule(text)

    def check(self, value: Any) -> None:
        if not isinstance(value, tuple):
            raise ValueError(f"{value!r} is not {self.form}")
        check_schedule(value)

    def show(self, value: Any) -> str:
        return ",".join(f"{delay:g}" for delay in value)


@dataclass(frozen=True)
class AddressList(Kind):
    """Kept as the text the operator wrote (its user parses it again); checked here by ``parse``."""

    parse_text: Callable[[str], object]
    placeholder: str
    description: str

    @property
    def metavar(self) -> str:
        return self.placeholder

    @property
    def form(self) -> str:
        return self.description

    def check(self, value: Any) -> None:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not {self.form}")
        self.parse_text(value)


def parse_networks(value: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """Parse ``"127.0.0.0/8, ::1/128"``; an empty string is no networks."""
    items = [item.strip() for item in value.split(",")]
    # strict: "10.0.0.1/8" is more likely a typo than a wish to allow all of 10/8.
    return tuple(ipaddress.ip_network(item, strict=True) for item in items if item)


def parse_proxies(value: str) -> list[str]:
    """``"10.0.0.1, 10.1.0.0/16"`` (or ``*``) as a list, refusing anything that is not an address or network."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    for item in items:
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
    return items


def parse_hosts(value: str) -> tuple[str, ...]:
    """``"relay.example.com, *.example.net"`` (or ``*``) as lower-case host patterns: names, ``*.`` wildcards and
    IP addresses (IPv6 in brackets), without ports; an empty string is none."""
    items = tuple(item.strip().lower().rstrip(".") for item in value.split(",") if item.strip())
    for item in items:
        if item == "*" or _HOST_PATTERN.fullmatch(item):
            continue
        if item.startswith("[") and item.endswith("]"):
            with contextlib.suppress(ValueError):
                ipaddress.IPv6Address(item[1:-1])
                continue
        raise ValueError(
            f"{item!r} is not a host name or IP address (no scheme, port or path; IPv6 in brackets: [::1])"
        )
    return items


_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


#: Networks subscribers may be reached at although they are not public (``AddressPolicy.from_setting``).
NETWORKS = AddressList(parse_networks, "CIDR,...", "comma-separated networks such as 127.0.0.0/8,10.1.0.0/16")
#: Reverse proxies whose X-Forwarded-For is believed (uvicorn's ``forwarded_allow_ips``).
PROXIES = AddressList(parse_proxies, "IP,CIDR,...", "comma-separated addresses or networks of trusted proxies, or *")
#: The Host header values the gateway answers (`relay.api.hosts`).
HOSTS = AddressList(
    parse_hosts, "HOST,...", "comma-separated host names (*.example.com matches below it) and IPs, or *"
)
