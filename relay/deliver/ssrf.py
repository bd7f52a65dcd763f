"""SSRF guard: only globally routable destinations (or an explicit allow-list) may receive deliveries."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from yarl import URL

from relay.settings.kinds import parse_networks

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Named blocks, checked before the generic `is_global` test so the refusal says *why*, and so that the
# ranges Python 3.11's `is_global` wrongly calls global are covered (marked "is_global misses").
# Most specific first: the first match names the reason.
_NAMED_BLOCKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    sorted(
        (
            (ipaddress.ip_network(net), why)
            for net, why in (
                ("0.0.0.0/8", "unspecified (this network)"),
                ("10.0.0.0/8", "private"),
                ("100.64.0.0/10", "shared address space (CGNAT)"),
                ("127.0.0.0/8", "loopback"),
                ("169.254.0.0/16", "link-local"),
                ("172.16.0.0/12", "private"),
                ("192.0.0.0/24", "IETF protocol assignments"),
                ("192.0.2.0/24", "documentation"),
                ("192.88.99.0/24", "6to4 relay anycast"),  # is_global misses
                ("192.168.0.0/16", "private"),
                ("198.18.0.0/15", "benchmarking"),
                ("198.51.100.0/24", "documentation"),
                ("203.0.113.0/24", "documentation"),
                ("224.0.0.0/4", "multicast"),  # is_global misses
                ("240.0.0.0/4", "reserved"),
                ("255.255.255.255/32", "broadcast"),
                ("::/128", "unspecified"),
                ("::1/128", "loopback"),
                ("::/96", "IPv4-compatible (deprecated)"),  # is_global misses
                ("64:ff9b:1::/48", "local-use NAT64"),  # is_global misses
                ("100::/64", "discard-only"),
                ("2001::/32", "Teredo"),
                ("2001::/23", "IETF protocol assignments"),
                ("2001:db8::/32", "documentation"),
                ("3fff::/20", "documentation"),  # is_global misses
                ("fc00::/7", "private (unique local)"),
                ("fe80::/10", "link-local"),
                ("fec0::/10", "site-local (deprecated)"),  # is_global misses
                ("ff00::/8", "multicast"),  # is_global misses
            )
        ),
        key=lambda block: -block[0].prefixlen,
    )
)
# Everything else in IPv6 outside 2000::/3 is unassigned or special-purpose, whatever `is_global` says.
_IPV6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")
_HOSTNAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
# A last label that is a number (decimal, octal or 0x-hex) makes the whole host an IPv4 address to
# `inet_aton` and to browsers' URL parsers, never a DNS name (no TLD is numeric).
_NUMERIC_LABEL = re.compile(r"(0[xX][0-9A-Fa-f]*|[0-9]+)")
#: DNS limits on a label and on a whole name (without its trailing dot), in octets of its ASCII form.
MAX_LABEL = 63
MAX_NAME = 253


class ForbiddenDestination(Exception):
    """A delivery URL or address the SSRF guard refuses; the message says which address and why."""


def _embedded_v4(ip: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 address actually reaches (mapped, NAT64, 6to4), with the mechanism."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return "NAT64", IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def _reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is forbidden ("private", "loopback", ...), or None when it is globally routable."""
    if isinstance(ip, IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            # Judge the address the packets really go to, not its IPv6 wrapping.
            how, v4 = embedded
            inner = _reason(v4)
            return None if inner is None else f"{how} {v4}, which is {inner}"
    for net, why in _NAMED_BLOCKS:
        if ip in net:
            return why
    if isinstance(ip, IPv6Address) and ip not in _IPV6_GLOBAL_UNICAST:
        return "not global unicast (outside 2000::/3)"
    if ip.is_multicast or ip.is_reserved or not ip.is_global:
        return "not globally routable"
    return None


def _check_lengths(raw_host: str) -> None:
    """DNS limits (RFC 1035): the resolver's IDNA codec raises UnicodeError beyond them, not a refusal."""
    name = raw_host.rstrip(".")
    if len(name) > MAX_NAME:
        raise ForbiddenDestination(f"the host name is {len(name)} characters; DNS allows at most {MAX_NAME}")
    for label in name.split("."):
        if len(label) > MAX_LABEL:
            raise ForbiddenDestination(
                f"the host name label {label[:20]}... is {len(label)} characters; DNS allows at most {MAX_LABEL}"
            )


def _numeric_host(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return bool(_NUMERIC_LABEL.fullmatch(labels[-1]))


@dataclass(frozen=True)
class AddressPolicy:
    """Which destination addresses deliveries may reach."""

    #: Explicit allow-list (``RELAY_ALLOW_NETWORKS``); wins over the block list, for internal subscribers.
    allow: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def from_setting(cls, value: str) -> AddressPolicy:
        """Parse ``"127.0.0.0/8, ::1/128"``; an empty string means no allow-list."""
        return cls(allow=parse_networks(value))

    def _allowed(self, ip: IPAddress) -> bool:
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            # A mapped address *is* the IPv4 address on a dual-stack socket.
            return any(ip in net or ip.ipv4_mapped in net for net in self.allow)
        return any(ip in net for net in self.allow)

    def check_ip(self, ip: str | IPv4Address | IPv6Address) -> None:
        """Raise ForbiddenDestination unless ``ip`` is globally routable or allow-listed.

        ValueError if ``ip`` is a string that is not an IP address.
        """
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        if self._allowed(address):
            return
        why = _reason(address)
        if why is not None:
            raise ForbiddenDestination(
                f"{address} is {why}; to allow it, add its network to RELAY_ALLOW_NETWORKS (--allow-networks)"
            )

    def check_url(self, url: str, schemes: tuple[str, ...] = ("http", "https"), *, credentials: bool = False) -> None:
        """Refuse URLs of other ``schemes``, credentials in URLs (unless ``credentials``: a broker's login), and
        IP-literal hosts that are forbidden.

        Parsed with yarl, as the sender's client parses it (relay/deliver/wire/target.py), so what is checked is what
        is connected to.
        Host names are checked again, address by address, when they are resolved (see `resolve`).
        """
        try:
            parsed = URL(url)
        except (ValueError, TypeError) as exc:
            raise ForbiddenDestination(f"invalid URL ({type(exc).__name__})") from None
        if parsed.scheme not in schemes:
            raise ForbiddenDestination(f"scheme {parsed.scheme!r} is not {' or '.join(schemes)}")
        if not credentials and (parsed.raw_user is not None or parsed.raw_password is not None):
            raise ForbiddenDestination("URL must not carry credentials (userinfo)")
        # `host` is decoded (IDN, IPv6 zone), `raw_host` is what the sender connects to. Decoding a bad
        # A-label ("xn--zz") raises UnicodeError, a ValueError.
        try:
            host, raw_host = parsed.host, parsed.raw_host
        except ValueError:
            raise ForbiddenDestination("the host is not a valid internationalised (IDNA) name") from None
        if not host or not raw_host:
            raise ForbiddenDestination("URL has no host")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            self.check_ip(literal)
            return
        if _numeric_host(host):
            # 2130706433, 0x7f.1, 017700000001, 127.1, "127.0.0.1.": resolvers turn these into addresses,
            # so say which one, then refuse the spelling anyway rather than trust every parser to agree.
            try:
                meant = IPv4Address(socket.inet_aton(host))
            except OSError:
                raise ForbiddenDestination(f"{host} is a numeric host but not an IPv4 address") from None
            try:
                self.check_ip(meant)
            except ForbiddenDestination as exc:
                raise ForbiddenDestination(f"{host}: {exc}") from None
            raise ForbiddenDestination(f"{host} is a non-canonical IPv4 address; write {meant}")
        if not _HOSTNAME.fullmatch(raw_host):
            raise ForbiddenDestination(f"{raw_host!r} is not a valid host name")
        _check_lengths(raw_host)

    async def resolve(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and return its addresses, refusing all of them if any is forbidden.

        All-or-nothing: a name that mixes public and private addresses is a rebinding or
        misconfiguration signal, and happy-eyeballs could otherwise pick the private one.
        """
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            try:
                self.check_ip(address)
            except ForbiddenDestination as exc:
                raise ForbiddenDestination(f"{host}: {exc}") from None
        return addresses
