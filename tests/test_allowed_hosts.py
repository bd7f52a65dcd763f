"""Which Host headers RELAY_ALLOWED_HOSTS lets in, and which of its values are refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.api.hosts import allowed_hosts, host_of, matches
from relay.cli import main
from relay.settings.kinds import parse_hosts
from relay.settings.table import Settings


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("relay.example.com", True),
        ("relay.example.com:8443", True),
        ("a.b.example.net", True),
        ("example.net", False),
        ("[::1]:8080", True),
        ("[::2]:8080", False),
        ("evil.example.com.attacker.example", False),
        ("", False),
    ],
)
def test_host_patterns(header: str, allowed: bool) -> None:
    patterns = parse_hosts("relay.example.com, *.example.net, [::1]")
    assert matches(host_of(header), patterns) is allowed


@pytest.mark.parametrize("text", ["https://relay.example.com", "relay.example.com:443", "::1", "a/b", "[::1"])
def test_a_host_pattern_that_is_not_a_host_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        parse_hosts(text)


def test_by_default_the_public_url_host_and_the_loopback_names_are_allowed() -> None:
    assert allowed_hosts(Settings(public_url="https://Relay.Example.com:8443/")) == (
        "relay.example.com",
        "localhost",
        "127.0.0.1",
        "[::1]",
    )
    assert allowed_hosts(Settings(host="10.0.0.5")) == ("10.0.0.5", "localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts(Settings(allowed_hosts="a.example.com,*")) == ("a.example.com", "*")


def test_an_allowed_hosts_mistake_stops_serve_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--db", str(tmp_path / "relay.db"), "--allowed-hosts", "https://relay.example.com"]
    )
    assert result.exit_code == 2
    assert "'https://relay.example.com' is not a host name" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "relay.db").exists()
