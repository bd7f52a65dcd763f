"""Vetting a subscriber's URL before it is stored: its kind's schemes, the SSRF policy, and every address its
host resolves to."""

from __future__ import annotations

import ipaddress
import socket

from yarl import URL

from relay.deliver.brokers import check_options
from relay.deliver.ssrf import AddressPolicy, ForbiddenDestination
from relay.domain.destinations import DEFAULT_PORTS, SCHEMES, Kind, check_scheme
from relay.domain.errors import BadSubscriber
from relay.domain.subscribers import check_url


def vet_destination(policy: AddressPolicy, url: str, kind: Kind = Kind.WEBHOOK) -> None:
    """Refuse malformed URLs, and URLs that are, or resolve to, addresses subscribers may not reach (checked
    again at connect). A broker's URL may carry its login; a web URL may not."""
    try:
        check_url(url)
    except ValueError as exc:
        raise BadSubscriber(str(exc)) from None
    try:
        check_scheme(kind, url.partition(":")[0].lower())
    except ValueError as exc:
        raise BadSubscriber(f"the URL is not allowed: {exc}") from None
    if kind.broker:
        try:
            check_options(kind, url)
        except ValueError as exc:
            raise BadSubscriber(str(exc)) from None
    try:
        policy.check_url(url, SCHEMES[kind], credentials=kind.broker)
        parsed = URL(url)
        host = parsed.host or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            port = parsed.port or DEFAULT_PORTS[parsed.scheme]
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                # UnicodeError: the IDNA codec refuses the name (check_url already refuses the known cases).
                raise BadSubscriber(f"the host {host!r} does not resolve") from None
            for info in infos:
                policy.check_ip(str(info[4][0]))
    except ForbiddenDestination as exc:
        raise BadSubscriber(f"the URL is not allowed: {exc}") from None
