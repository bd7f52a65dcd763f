"""Where a delivery URL goes, read once per URL (`Sender` keeps it): what the pool connects to and what the request
line says."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from yarl import URL

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    #: The pool's key: connections are shared only within one origin.
    key: tuple[str, str, int]
    #: The host as connected to: an IDN in its ASCII form, an IPv6 literal without brackets.
    host: str
    port: int
    tls: bool
    #: An IP literal is connected to as written: `AddressPolicy.check_url` vetted it, no lookup happens.
    literal: bool
    #: Path and query, percent-encoded as aiohttp sent them (the fragment stays with the client).
    path: str
    #: The Host header.
    authority: str


def parse(url: str) -> Target:
    """``url`` already passed `AddressPolicy.check_url`: an http(s) URL with a host and no credentials.

    Parsed with yarl, as the check did, so what was checked is what is connected to.
    """
    parsed = URL(url)
    scheme, host = parsed.scheme, parsed.raw_host
    if host is None or scheme not in _DEFAULT_PORTS:
        raise ValueError("not an http(s) URL with a host")
    port = parsed.port or _DEFAULT_PORTS[scheme]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        literal = False
    else:
        literal = True
    # What aiohttp sent: lower-cased, no trailing dot, IPv6 in brackets, the port only when not the default.
    authority = parsed.host_port_subcomponent or host
    path = parsed.raw_path_qs or "/"
    return Target((scheme, host, port), host, port, scheme == "https", literal, path, authority)
