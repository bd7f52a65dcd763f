"""deploy/nginx/cos-relay-replicas.conf rendered and run by a real nginx in front of replicas on loopback
(the chaos tests and bench/postgres_replicas.py)."""

from __future__ import annotations

import contextlib
import getpass
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.live import free_port, wait_until

TEMPLATE = Path(__file__).parent.parent / "deploy" / "nginx" / "cos-relay-replicas.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render(folder: Path, listen: int, replica_ports: list[int]) -> Path:
    """The committed file with its placeholders filled, inside a minimal nginx.conf of the caller's own."""
    site = TEMPLATE.read_text()
    if len(replica_ports) == 1:  # one replica: its line, without the second's
        site = "\n".join(line for line in site.splitlines() if "__REPLICA_2__" not in line)
    values = {"__LISTEN__": f"127.0.0.1:{listen}", "__ACCESS_LOG__": str(folder / "access.log")}
    values |= {f"__REPLICA_{n}__": f"127.0.0.1:{port}" for n, port in enumerate(replica_ports, 1)}
    for placeholder, value in values.items():
        site = site.replace(placeholder, value)
    assert "__" not in site, "a placeholder left unfilled"
    (folder / "site.conf").write_text(site)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = " ".join(f"{kind}_temp_path {folder / kind};" for kind in kinds)
    main = folder / "nginx.conf"
    main.write_text(
        f"daemon off;\nworker_processes 1;\nuser {getpass.getuser()};\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} error;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log off;\n  {temp}\n  include {folder / 'site.conf'};\n}}\n"
    )
    return main


@contextlib.contextmanager
def balancing(folder: Path, replica_ports: list[int]) -> Iterator[str]:
    """nginx in front of the replicas until the block ends; yields its URL once it answers /healthz."""
    port = free_port()
    config = render(folder, port, replica_ports)
    nginx = subprocess.Popen([NGINX, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(config)])
    url = f"http://127.0.0.1:{port}"

    def answering(probe: httpx.Client) -> bool:
        assert nginx.poll() is None, f"nginx exited: {(folder / 'error.log').read_text()}"
        try:
            return probe.get(f"{url}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        with httpx.Client(timeout=2) as probe:  # one SSL context for all the polls, not one each
            wait_until(lambda: answering(probe), timeout=20, what="nginx answering")
        yield url
    finally:
        nginx.send_signal(signal.SIGQUIT)  # graceful: workers finish, the master removes its pid file
        try:
            nginx.wait(timeout=20)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
