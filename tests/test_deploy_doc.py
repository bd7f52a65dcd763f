"""Every command block of docs/deploy.md, run as written (issue 25, item 8). What only a real host has is replaced,
and each replacement is listed here:
- `sudo -u postgres` becomes `runuser -u postgres --` (no sudo here);
- `db.internal:5432` and `PASSWORD` become a throwaway PostgreSQL cluster (trust login) and a password;
- `/etc`, `/opt` and `/var/lib` move under the test's folder;
- `systemctl` is a stand-in that records its arguments (no systemd here);
- ports 8080 and the load balancer's address move to free loopback ones.

The install block runs `pip install .` from this checkout into a new virtualenv; the sections that exist
elsewhere (nginx, the systemd unit's keys) are run by tests/test_deploy_nginx.py and tests/test_deploy_unit.py.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DATA
from tests.live import free_port, wait_until
from tests.postgres import Cluster, running

#: Slow tier: a virtualenv install, a PostgreSQL cluster and gateway processes.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "docs" / "deploy.md"
PASSWORD = "deploy-doc-password"
METRICS_TOKEN = "deploy-doc-metrics-Hq8vX2mZ5kP9wR3tY7bN4cF6"


def blocks() -> list[str]:
    """The fenced code blocks of docs/deploy.md, in order."""
    return re.findall(r"^```[a-z]*\n(.*?)^```", DEPLOY.read_text(), flags=re.MULTILINE | re.DOTALL)


def block(first_words: str) -> str:
    [found] = [text for text in blocks() if text.lstrip().startswith(first_words)]
    return found


def lines(text: str) -> list[str]:
    """A block's commands: comments dropped, continued lines joined."""
    joined = text.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def test_every_block_of_the_deploy_guide_is_one_this_module_runs() -> None:
    known = (
        "RELAY_FORWARDED_ALLOW_IPS=127.0.0.1      #",
        "python3 -m venv",
        "RELAY_FORWARDED_ALLOW_IPS=127.0.0.1\n",
        "sudo -u postgres createuser",
        "RELAY_DB=postgresql://",
        "cos-relay migrate-to",
    )
    found = blocks()
    assert len(found) == len(known), "a block was added to docs/deploy.md: run it here too"
    for text, start in zip(found, known, strict=True):
        assert text.startswith(start), text


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running() as started:
        yield started


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test's stand-in for the host's file system: its /etc, /opt and /var/lib, and a recording systemctl."""
    root = tmp_path_factory.mktemp("host")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "systemctl"
    recorder.write_text(f'#!/bin/sh\necho "$@" >> {root / "systemctl.log"}\n')
    recorder.chmod(0o755)
    return root


def on_host(command: str, host: Path) -> str:
    for real in ("/etc/", "/opt/", "/var/lib/"):
        command = command.replace(real, f"{host}{real}")
    return command


@pytest.mark.timeout(300)  # pip builds and installs the wheel and its dependencies: 55 s quiet, over 120 s busy
def test_the_install_block_installs_from_this_checkout_and_enables_the_unit(host: Path) -> None:
    env = {**os.environ, "PATH": f"{host / 'bin'}:{os.environ['PATH']}"}
    for real in ("etc/systemd/system", "opt"):
        (host / real).mkdir(parents=True, exist_ok=True)
    for command in lines(block("python3 -m venv")):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", on_host(command, host)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    installed = host / "opt" / "cos-relay" / ".venv" / "bin" / "cos-relay"
    assert subprocess.run([str(installed), "--help"], capture_output=True, check=False).returncode == 0
    # Installed, not editable: the package finds its XSD inside itself, whatever the working directory.
    elsewhere, alone = host / "elsewhere", {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    elsewhere.mkdir()
    sample = str(DATA / "samples" / "transcode_success.xml")
    validated = subprocess.run([str(installed), "validate", sample], cwd=elsewhere, env=alone, capture_output=True)
    assert validated.returncode == 0, validated.stderr
    where = "from relay.validate.schema import schema_path; print(schema_path())"
    located = subprocess.run(
        [str(installed.with_name("python")), "-c", where],
        cwd=elsewhere,
        env=alone,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(host / "opt" / "cos-relay" / ".venv") in located
    assert sys.prefix not in located
    assert (host / "etc" / "systemd" / "system" / "cos-relay.service").is_file()
    assert (host / "etc" / "cos-relay" / "env").stat().st_mode & 0o777 == 0o600
    assert (host / "systemctl.log").read_text().splitlines() == ["daemon-reload", "enable --now cos-relay"]


def test_the_env_file_blocks_start_a_gateway(tmp_path: Path) -> None:
    env_lines = lines(block("RELAY_FORWARDED_ALLOW_IPS=127.0.0.1\n")) + lines(
        block("RELAY_FORWARDED_ALLOW_IPS=127.0.0.1 ")
    )
    settings = dict(line.split("=", 1) for line in env_lines)
    settings["RELAY_METRICS_TOKEN"] = METRICS_TOKEN  # the guide's "..."
    port = free_port()
    env = {**os.environ, **settings, "RELAY_DB": str(tmp_path / "relay.db"), "RELAY_PORT": str(port)}
    with gateway(env, tmp_path) as url:
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200


def test_the_replica_blocks_create_the_role_and_database_and_a_replica_serves_on_them(
    cluster: Cluster, tmp_path: Path
) -> None:
    pg = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port)}
    for line in lines(block("sudo -u postgres createuser")):
        argv = shlex.split(line.replace("sudo -u postgres", "runuser -u postgres --"))
        made = subprocess.run(argv, input=f"{PASSWORD}\n{PASSWORD}\n", env=pg, capture_output=True, text=True)
        assert made.returncode == 0, f"{line}\n{made.stderr}"
    # The guide's last section first: an SQLite database moved into the new one, as written.
    sqlite = tmp_path / "var" / "lib" / "cos-relay" / "relay.db"
    sqlite.parent.mkdir(parents=True)
    with gateway({**os.environ, "RELAY_DB": str(sqlite), "RELAY_PORT": str(free_port())}, tmp_path):
        pass  # made, with its tokens
    [migrate] = lines(block("cos-relay migrate-to"))
    migrate = migrate.replace("PASSWORD", PASSWORD).replace("db.internal", f"127.0.0.1:{cluster.port}")
    argv = shlex.split(migrate.replace("/var/lib/", f"{tmp_path}/var/lib/"))
    assert argv[:2] == ["cos-relay", "migrate-to"]
    done = subprocess.run([sys.executable, "-m", "relay", *argv[1:]], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # Then a replica on it.
    [serve] = lines(block("RELAY_DB=postgresql://"))
    port = free_port()
    serve = (
        serve.replace("PASSWORD", PASSWORD)
        .replace("db.internal:5432", f"127.0.0.1:{cluster.port}")
        .replace("--port 8080", f"--port {port}")
        .replace("--host 0.0.0.0", "--host 127.0.0.1")
    )
    words = shlex.split(serve)
    assignments = [word for word in words if re.fullmatch(r"RELAY_[A-Z_]+=.*", word)]
    command = [word for word in words if word not in assignments]
    assert command[:2] == ["cos-relay", "serve"]
    env = {**os.environ, **dict(word.split("=", 1) for word in assignments)}
    with gateway(env, tmp_path, args=command[2:]) as url:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200


class gateway:
    """``cos-relay serve`` with ``env`` (and ``args``) until the block ends; yields its URL once healthy."""

    def __init__(self, env: dict[str, str], folder: Path, args: list[str] | None = None) -> None:
        given = args or []
        self.port = int(given[given.index("--port") + 1] if "--port" in given else env["RELAY_PORT"])
        self.log = (folder / "serve.log").open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", *given], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def __enter__(self) -> str:
        url = f"http://127.0.0.1:{self.port}"

        def healthy() -> bool:
            assert self.process.poll() is None, "serve exited"
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=30, what="the gateway healthy")
        return url

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()
