"""deploy/cos-relay.service: a unit systemd accepts, hardened, whose ExecStart only uses options `serve` has."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent / "deploy" / "cos-relay.service"
#: The path the committed unit assumes; the test points it at this checkout's command instead.
INSTALLED = "/opt/cos-relay/.venv/bin/cos-relay"


def read_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with all its values (systemd allows a key several times)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a key before any section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line}"
        current.setdefault(key, []).append(value)
    return sections


def test_the_unit_has_the_sections_and_hardening_options_that_apply() -> None:
    service = read_unit(UNIT.read_text())["Service"]
    assert service["DynamicUser"] == ["yes"]
    assert service["StateDirectory"] == ["cos-relay"]
    assert service["EnvironmentFile"] == ["/etc/cos-relay/env"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert service[key] == [value], key
    assert service["SystemCallFilter"][0] == "@system-service"
    # serve raises its soft limit to the hard one, so the unit's limit is what it gets.
    assert int(service["LimitNOFILE"][0]) >= 65536
    assert "WantedBy" in read_unit(UNIT.read_text())["Install"]


@pytest.mark.slow
def test_exec_start_uses_only_options_serve_has_and_keeps_the_database_in_the_state_directory() -> None:
    command = shlex.split(read_unit(UNIT.read_text())["Service"]["ExecStart"][0])
    assert command[:2] == [INSTALLED, "serve"]
    options = [word for word in command[2:] if word.startswith("--")]
    assert command[command.index("--db") + 1].startswith("/var/lib/cos-relay/")
    # The real command's help, not click's test runner: what an operator's install would run.
    help_text = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in options:
        assert f"{option} " in help_text, f"serve has no {option}"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here; the parsing tests above still ran")
    command = Path(sys.executable).parent / "cos-relay"
    unit = tmp_path / "cos-relay.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(command)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
