"""Only requests naming this gateway's host: a Host header an operator did not allow gets 400.

A page on ``rebind.attacker.example`` whose name the attacker re-points at the gateway's address reaches it
from the victim's browser as same-origin, with ``Host: rebind.attacker.example``. Answering only configured
host names (`Settings.allowed_hosts`; by default the public URL's host and the loopback names) ends that.
The probes' routes stay open: a load balancer's health check may name the gateway by any address.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.logs import Throttle, clip
from relay.settings.kinds import parse_hosts
from relay.settings.table import Settings

logger = logging.getLogger(__name__)

#: Answered whatever the Host: they say only whether the process is up and its database writable.
OPEN_PATHS = ("/healthz", "/readyz")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: A refused host is logged at most once per this many seconds.
REFUSAL_LOG_INTERVAL = 10.0


def allowed_hosts(settings: Settings) -> tuple[str, ...]:
    """The configured host patterns, else the base URL's host and the loopback names."""
    if settings.allowed_hosts:
        return parse_hosts(settings.allowed_hosts)
    netloc = urlsplit(settings.base_url).netloc.lower()
    return (host_of(netloc), *LOOPBACK_NAMES)


def host_of(header: str) -> str:
    """The host of a Host header (``name:port``, ``[v6]:port``), lower case, without the port or a final dot."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host.partition("]")[0] + "]"
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def matches(host: str, patterns: Sequence[str]) -> bool:
    return any(
        pattern == "*" or host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
        for pattern in patterns
    )


class AllowedHosts:
    """ASGI middleware: 400 for a request whose Host is missing or not one of ``patterns``."""

    def __init__(self, app: ASGIApp, patterns: Sequence[str]) -> None:
        self.app = app
        self.patterns = tuple(patterns)
        self._log = Throttle(REFUSAL_LOG_INTERVAL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.patterns or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"host"), b"").decode("latin-1")
        if matches(host_of(header), self.patterns):
            await self.app(scope, receive, send)
            return
        held = self._log.allow("host")
        if held is not None:
            logger.warning(
                "refused a request for host %r: not in RELAY_ALLOWED_HOSTS (%s)%s",
                clip(header),
                ",".join(self.patterns),
                f" ({held} more refused like this since the last line, not logged)" if held else "",
                extra={"action": "host_refused"},
            )
        refusal = {
            "error": "bad_host",
            "detail": "this gateway does not answer to that Host; an operator lists its names in RELAY_ALLOWED_HOSTS",
        }
        await JSONResponse(refusal, status_code=400)(scope, receive, send)
