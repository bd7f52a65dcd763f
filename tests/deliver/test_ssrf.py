"""SSRF guard: which addresses, URLs and resolved names deliveries may reach."""

from __future__ import annotations

import asyncio
import re
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import pytest
from hypothesis import given, strategies as st

from relay.deliver.ssrf import AddressPolicy, ForbiddenDestination

GUARD = AddressPolicy()

BLOCKED_IPS = [
    # (address, why: a word the refusal must contain)
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
    ("0.1.2.3", "this network"),
    ("224.0.0.1", "multicast"),  # Python 3.11 is_global says True
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("192.0.0.8", "IETF"),
    ("192.88.99.1", "6to4 relay"),  # is_global says True
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd12:3456:789a::1", "private"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fec0::1", "site-local"),  # is_global says True
    ("ff02::1", "multicast"),  # is_global says True
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),  # RFC 9637; is_global says True
    ("100::1", "discard"),
    ("64:ff9b:1::1", "local-use NAT64"),  # is_global says True
    ("2001::1", "Teredo"),
    ("2001:10::1", "IETF"),
    ("5f00::1", "2000::/3"),  # SRv6 SIDs
    ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1, which is loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1, which is private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("64:ff9b::10.0.0.1", "NAT64 10.0.0.1, which is private"),  # is_global says True
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::169.254.169.254", "link-local"),
    ("2002:a00:1::1", "6to4 10.0.0.1, which is private"),  # is_global says True
    ("2002:7f00:1::", "loopback"),
    ("2002:a9fe:a9fe::1", "link-local"),
    ("::127.0.0.1", "IPv4-compatible"),  # is_global says True
    ("::8.8.8.8", "IPv4-compatible"),
    ("::ffff:0:10.0.0.1", "2000::/3"),  # SIIT IPv4-translated
]

ALLOWED_IPS = [
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.15.255.255",
    "172.32.0.0",
    "192.167.255.255",
    "192.169.0.0",
    "11.0.0.1",
    "223.255.254.1",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",  # mapped public: connects to 8.8.8.8
    "64:ff9b::8.8.8.8",  # NAT64 of a public address
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize(("address", "why"), BLOCKED_IPS, ids=[address for address, _ in BLOCKED_IPS])
def test_non_global_addresses_are_refused_with_the_address_and_the_reason(address: str, why: str) -> None:
    with pytest.raises(ForbiddenDestination, match=re.escape(why)) as caught:
        GUARD.check_ip(address)
    assert str(ip_address(address)) in str(caught.value)


@pytest.mark.parametrize("address", ALLOWED_IPS)
def test_globally_routable_addresses_pass(address: str) -> None:
    GUARD.check_ip(address)
    GUARD.check_ip(ip_address(address))


def test_check_ip_takes_address_objects_too() -> None:
    with pytest.raises(ForbiddenDestination, match=r"10\.0\.0\.1 is private"):
        GUARD.check_ip(IPv4Address("10.0.0.1"))
    with pytest.raises(ForbiddenDestination, match="loopback"):
        GUARD.check_ip(IPv6Address("::1"))


# Each of these is_global in Python 3.11.7 (some are fixed in later patch releases, CVE-2024-4032), so
# `is_global` alone is not the rule: the guard names them explicitly or unwraps the embedded IPv4.
IS_GLOBAL_MISSES = [
    "224.0.0.1",
    "ff02::1",
    "fec0::1",
    "3fff::1",
    "64:ff9b:1::1",
    "192.88.99.1",
    "64:ff9b::a00:1",
    "2002:a00:1::",
    "::127.0.0.1",
]


@pytest.mark.parametrize("address", IS_GLOBAL_MISSES)
def test_blocked_even_where_python_is_global_says_global(address: str) -> None:
    with pytest.raises(ForbiddenDestination):
        GUARD.check_ip(address)


def test_cgnat_is_blocked_though_python_calls_it_neither_private_nor_global() -> None:
    cgnat = ip_address("100.64.0.1")
    assert not cgnat.is_private  # a guard built on is_private would let it through
    assert not cgnat.is_global
    with pytest.raises(ForbiddenDestination, match="CGNAT"):
        GUARD.check_ip(cgnat)


def test_allow_list_wins_over_the_block_list() -> None:
    policy = AddressPolicy(allow=(ip_network("10.0.0.0/8"), ip_network("::1/128")))
    policy.check_ip("10.1.2.3")
    policy.check_ip("::1")
    policy.check_ip("8.8.8.8")  # the public internet stays reachable
    with pytest.raises(ForbiddenDestination, match="private"):
        policy.check_ip("192.168.0.1")
    with pytest.raises(ForbiddenDestination, match="loopback"):
        policy.check_ip("127.0.0.1")


def test_allow_listed_ipv4_also_allows_its_ipv4_mapped_form() -> None:
    policy = AddressPolicy(allow=(ip_network("127.0.0.0/8"),))
    policy.check_ip("::ffff:127.0.0.1")
    with pytest.raises(ForbiddenDestination):
        policy.check_ip("64:ff9b::127.0.0.1")  # NAT64 goes through a gateway, not to our loopback


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("127.0.0.0/8, ::1/128", ("127.0.0.0/8", "::1/128")),
        ("10.0.0.0/8", ("10.0.0.0/8",)),
        ("10.1.2.3", ("10.1.2.3/32",)),
        ("fd00::/8,", ("fd00::/8",)),
        ("", ()),
        ("   ", ()),
    ],
)
def test_allow_list_setting_is_comma_separated_networks(setting: str, expected: tuple[str, ...]) -> None:
    assert AddressPolicy.from_setting(setting).allow == tuple(ip_network(net) for net in expected)


@pytest.mark.parametrize(
    "setting",
    ["junk", "10.0.0.0/33", "10.0.0.1/8", "127.0.0.0/8;::1/128", "127.0.0.0/8 ::1/128", "localhost"],
)
def test_allow_list_setting_rejects_junk(setting: str) -> None:
    with pytest.raises(ValueError, match=r"does not appear to be|has host bits set|not a valid netmask"):
        AddressPolicy.from_setting(setting)


BLOCKED_URLS = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[64:ff9b::a00:1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://10.0.0.1/", "10.0.0.1 is private"),
    ("https://0.0.0.0/", "unspecified"),
    # Numeric spellings that inet_aton and many resolvers turn into 127.0.0.1.
    ("http://2130706433/", "127.0.0.1 is loopback"),
    ("http://0x7f.1/", "127.0.0.1 is loopback"),
    ("http://0x7f000001/", "127.0.0.1 is loopback"),
    ("http://017700000001/", "127.0.0.1 is loopback"),
    ("http://0177.0.0.1/", "127.0.0.1 is loopback"),
    ("http://127.1/", "127.0.0.1 is loopback"),
    ("http://0/", "0.0.0.0 is unspecified"),
    ("http://3232235777/", "192.168.1.1 is private"),
    ("http://0xa9fea9fe/", "169.254.169.254 is link-local"),
    # A public address spelt oddly is refused too: no parser differential to exploit.
    ("http://134744072/", "non-canonical IPv4 address; write 8.8.8.8"),
    ("http://127.0.0.1./", "numeric host"),
    ("http://1.2.3.4.5/", "numeric host"),
    ("http://%31%32%37.0.0.1/", "numeric host"),
    ("http://exa mple.com/", "not a valid host name"),
    ("http://a..b/", "not a valid host name"),
    ("ftp://example.com/", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://example.com/", "scheme 'gopher'"),
    ("javascript:alert(1)", "scheme 'javascript'"),
    ("example.com/hook", "scheme ''"),
    ("http:///hook", "no host"),
    ("http://user:pass@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("http://:pass@example.com/", "credentials"),
    ("http://example.com:99999/", "invalid URL"),
]


@pytest.mark.parametrize(("url", "why"), BLOCKED_URLS, ids=[url for url, _ in BLOCKED_URLS])
def test_forbidden_urls_are_refused_before_any_connection(url: str, why: str) -> None:
    with pytest.raises(ForbiddenDestination, match=re.escape(why)):
        GUARD.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "http://example.com:8080/x?access_token=abc",
        "HTTPS://EXAMPLE.COM/",
        "https://8.8.8.8/",
        "https://[2001:4860:4860::8888]:8443/",
        "https://bücher.example/",
        "https://hooks_1.example.com./path",
        "https://1password.com/",  # a numeric first label is a normal name
        "http://localhost/",  # a name: checked when resolved, see below
    ],
)
def test_public_urls_and_host_names_pass_check_url(url: str) -> None:
    GUARD.check_url(url)


def test_an_allow_listed_ip_literal_url_passes() -> None:
    AddressPolicy.from_setting("127.0.0.0/8").check_url("http://127.0.0.1:8080/")


@pytest.mark.anyio
async def test_resolving_localhost_is_refused_without_an_allow_list() -> None:
    with pytest.raises(ForbiddenDestination, match=r"localhost: .* is loopback"):
        await GUARD.resolve("localhost", 80)


@pytest.mark.anyio
async def test_resolving_localhost_returns_the_vetted_addresses_with_an_allow_list() -> None:
    policy = AddressPolicy.from_setting("127.0.0.0/8, ::1/128")
    addresses = await policy.resolve("localhost", 80)
    assert addresses
    assert all(ip_address(address).is_loopback for address in addresses)
    assert len(addresses) == len(set(addresses))


def fake_getaddrinfo(*addresses: str) -> Any:
    """A loop.getaddrinfo answering with ``addresses`` (TCP and UDP, as real resolvers do)."""

    async def getaddrinfo(host: str, port: int, **_: object) -> list[tuple[Any, ...]]:
        infos: list[tuple[Any, ...]] = []
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            infos += [
                (family, socket.SOCK_STREAM, 6, "", sockaddr),
                (family, socket.SOCK_DGRAM, 17, "", sockaddr),
            ]
        return infos

    return getaddrinfo


@pytest.mark.anyio
async def test_a_name_with_any_forbidden_address_is_refused_entirely(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo("8.8.8.8", "10.0.0.1", "8.8.4.4"))
    with pytest.raises(
        ForbiddenDestination,
        match=r"^hooks\.example: 10\.0\.0\.1 is private; to allow it, add its network to RELAY_ALLOW",
    ):
        await GUARD.resolve("hooks.example", 443)


@pytest.mark.anyio
async def test_a_rebinding_style_answer_with_a_mapped_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo("2001:4860:4860::8888", "::ffff:169.254.169.254"))
    with pytest.raises(ForbiddenDestination, match="link-local"):
        await GUARD.resolve("hooks.example", 443)


@pytest.mark.anyio
async def test_a_name_with_only_public_addresses_resolves_once_each_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo("8.8.8.8", "2001:4860:4860::8888", "8.8.8.8"))
    assert await GUARD.resolve("hooks.example", 443) == ["8.8.8.8", "2001:4860:4860::8888"]


@pytest.mark.anyio
async def test_a_name_that_does_not_resolve_is_an_os_error_not_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_such_name(host: str, port: int, **_: object) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_name)
    with pytest.raises(socket.gaierror):
        await GUARD.resolve("hooks.example", 443)


ipv4s = st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)


def verdict(policy: AddressPolicy, address: str | IPv4Address | IPv6Address) -> bool:
    try:
        policy.check_ip(address)
    except ForbiddenDestination:
        return False
    return True


@given(ipv4s)
def test_ipv6_wrappings_of_an_ipv4_address_get_the_same_verdict(v4: IPv4Address) -> None:
    expected = verdict(GUARD, v4)
    assert verdict(GUARD, IPv6Address(f"::ffff:{v4}")) == expected
    assert verdict(GUARD, IPv6Address(f"64:ff9b::{v4}")) == expected
    assert verdict(GUARD, IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)) == expected


@given(ipv4s)
def test_an_accepted_ipv4_address_is_global_unicast_by_python_too(v4: IPv4Address) -> None:
    if verdict(GUARD, v4):
        assert v4.is_global
        assert not v4.is_multicast


@given(st.integers(min_value=0, max_value=2**128 - 1).map(IPv6Address))
def test_any_ipv6_address_gets_a_verdict_and_accepted_ones_are_global_unicast(v6: IPv6Address) -> None:
    if verdict(GUARD, v6) and v6.ipv4_mapped is None and v6.sixtofour is None and v6 not in ip_network("64:ff9b::/96"):
        assert v6 in ip_network("2000::/3")
        assert v6.is_global


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"https://{'a' * 64}.example.com/", "is 64 characters; DNS allows at most 63"),
        (f"https://{'a' * 64}/", "is 64 characters; DNS allows at most 63"),
        (f"https://{'.'.join(['a' * 63] * 4)}.com/", "the host name is 259 characters; DNS allows at most 253"),
        ("https://xn--zz.example.com/", "not a valid internationalised (IDNA) name"),
    ],
)
def test_host_names_beyond_dns_limits_are_refused_with_the_limit(url: str, why: str) -> None:
    with pytest.raises(ForbiddenDestination, match=re.escape(why)):
        AddressPolicy().check_url(url)


def test_a_host_name_at_dns_limits_passes_check_url_and_one_character_more_does_not() -> None:
    AddressPolicy().check_url(f"https://{'a' * 63}.example.com./")
    AddressPolicy().check_url(f"https://{'.'.join(['a' * 63] * 3)}.{'a' * 61}/")
    with pytest.raises(ForbiddenDestination, match="DNS allows at most 63"):
        AddressPolicy().check_url(f"https://{'a' * 64}.example.com./")
    with pytest.raises(ForbiddenDestination, match="DNS allows at most 253"):
        AddressPolicy().check_url(f"https://{'.'.join(['a' * 63] * 3)}.{'a' * 62}/")
