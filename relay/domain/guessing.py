"""How fast one source may guess a token: ``limit`` wrong tokens per ``window`` seconds, then one every
``window / limit`` seconds.

Each (check, source) keeps one number, the time its allowance is used up to (the generic cell rate
algorithm): a wrong token moves it ``window / limit`` later; a source whose time is more than
``window - window / limit`` ahead of now waits. So a burst of ``limit`` wrong tokens is let through, then
one every ``window / limit`` seconds, and an idle source is forgiven at that pace. The sources kept are at
most ``capacity``, the least recently wrong one forgotten first: memory stays bounded under a flood of
distinct addresses.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict

#: Sources remembered at once (about 250 bytes each: 11.7 MiB when full).
CAPACITY = 50_000
#: Float sums of ``window / limit`` are not exact: ``limit - 1`` wrong tokens must not count as ``limit``.
EPSILON = 1e-6
#: IPv6 clients are counted by their /64: one host usually holds a whole /64, and could rotate through it.
IPV6_PREFIX = 64


def source_key(address: str | None) -> str:
    """What a client address is counted as: itself (IPv4), its /64 (IPv6), or ``unknown`` when there is none."""
    if address is None:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


class Guesses:
    """Wrong tokens per (check, source). ``limit`` 0 lets every guess through (throttling off)."""

    def __init__(self, limit: int, window: float, capacity: int = CAPACITY) -> None:
        self.limit = limit
        self._interval = window / limit if limit else 0.0
        self._burst = window - self._interval
        self._capacity = capacity
        #: (check, source) -> the time its allowance is used up to; least recently wrong first.
        self._used_up: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._used_up)

    def wait(self, check: str, source: str, now: float) -> float:
        """Seconds ``source`` must wait before its next token at ``check`` is even compared (0: none)."""
        if not self.limit:
            return 0.0
        used_up = self._used_up.get((check, source))
        ahead = 0.0 if used_up is None else used_up - now - self._burst
        return ahead if ahead > EPSILON else 0.0

    def wrong(self, check: str, source: str, now: float) -> bool:
        """Count a wrong token; True when this one used up the source's allowance (it must wait from now on)."""
        if not self.limit:
            return False
        key = (check, source)
        used_up = max(self._used_up.pop(key, now), now) + self._interval
        self._used_up[key] = used_up
        if len(self._used_up) > self._capacity:
            self._used_up.popitem(last=False)
        return used_up - now - self._burst > EPSILON


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
