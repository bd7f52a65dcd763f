"""Real brokers from Debian's packages, each in a temporary folder on a free loopback port, for tests and benches.

Each can be killed (SIGKILL, as a crash) and started again on the same port and data, and is stopped and its
folder removed by `remove`. Installing a package may have started its own service: these never touch it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.brokers.certs import Certs
from tests.live import free_port

RABBITMQ = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
NATS = Path("/usr/sbin/nats-server")
REDIS = Path("/usr/bin/redis-server")
#: RabbitMQ boots in 5-15 s on a busy 2-core machine; the others in well under a second.
START_WITHIN = 90.0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class BrokerServer:
    """One broker process: `start`, `kill` (a crash), `start` again (same port and data), `remove`."""

    program: Path
    name: str

    def __init__(self) -> None:
        if not self.program.exists():
            raise RuntimeError(f"{self.program} is not installed; run scripts/system-packages")
        self.folder = Path(tempfile.mkdtemp(prefix=f"cos-relay-{self.name}-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        log = (self.folder / "log").open("ab")
        # A session of its own: `kill` reaches the broker and every process its start script made.
        self.process = subprocess.Popen(
            self.command(), env=self.environment(), stdout=log, stderr=log, cwd=self.folder, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + START_WITHIN
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not start: {(self.folder / 'log').read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to clients, nothing flushed that was not already."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class Nats(BrokerServer):
    """``tls``: serve TLS only, with this certificate (the URL is then ``tls://localhost``)."""

    program, name = NATS, "nats"

    def __init__(self, tls: Certs | None = None) -> None:
        super().__init__()
        self.tls = tls

    def command(self) -> list[str]:
        # -js: JetStream, its streams stored under our folder.
        command = [str(self.program), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.folder / "js")]
        if self.tls is not None:
            command += ["--tls", "--tlscert", str(self.tls.cert), "--tlskey", str(self.tls.key)]
        return command

    @property
    def url(self) -> str:
        return f"tls://localhost:{self.port}" if self.tls else f"nats://127.0.0.1:{self.port}"


class Redis(BrokerServer):
    """``appendfsync``: ``always`` (the default here) syncs the append-only file before each answer, so what Redis
    acknowledged survives even the machine's crash; ``everysec`` is Redis's own default."""

    program, name = REDIS, "redis"

    def __init__(self, appendfsync: str = "always", tls: Certs | None = None) -> None:
        super().__init__()
        self.appendfsync = appendfsync
        self.tls = tls

    def command(self) -> list[str]:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.folder),
            "appendonly": "yes",
            "appendfsync": self.appendfsync,
            "save": "",
            "daemonize": "no",
            "protected-mode": "no",
        }
        if self.tls is not None:  # TLS only, clients not asked for certificates
            options |= {"port": "0", "tls-port": str(self.port), "tls-auth-clients": "no"}
            options |= {"tls-cert-file": str(self.tls.cert), "tls-key-file": str(self.tls.key)}
            options["tls-ca-cert-file"] = str(self.tls.ca)
        return [str(self.program), *(part for key, value in options.items() for part in (f"--{key}", value))]

    @property
    def url(self) -> str:
        return f"rediss://localhost:{self.port}" if self.tls else f"redis://127.0.0.1:{self.port}"


class RabbitMQ(BrokerServer):
    """RabbitMQ without its service wrapper (which runs as the rabbitmq user, in /var/lib/rabbitmq): its own node
    name, ports, Mnesia folder and Erlang cookie, and its own epmd on a free port, all on loopback."""

    program, name = RABBITMQ, "rabbitmq"

    def __init__(self, tls: Certs | None = None) -> None:
        super().__init__()
        self.epmd_port = free_port()
        self.dist_port = free_port()
        self.epmd: subprocess.Popen[bytes] | None = None
        self.tls = tls

    def start(self) -> None:
        # Erlang's port mapper, ours: the node's start would otherwise daemonise one that outlives the test.
        if self.epmd is None:
            command = ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"]
            self.epmd = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + START_WITHIN
            while not _listening(self.epmd_port):
                if self.epmd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("epmd did not start")
                time.sleep(0.05)
        super().start()

    def environment(self) -> dict[str, str]:
        folder = str(self.folder)
        (self.folder / "enabled_plugins").write_text("[].\n")
        config = ""
        if self.tls is not None:  # TLS only, on the node's port; clients not asked for certificates
            config = (
                f"listeners.tcp = none\nlisteners.ssl.default = {self.port}\n"
                f"ssl_options.cacertfile = {self.tls.ca}\nssl_options.certfile = {self.tls.cert}\n"
                f"ssl_options.keyfile = {self.tls.key}\nssl_options.verify = verify_none\n"
                "ssl_options.fail_if_no_peer_cert = false\n"
            )
        (self.folder / "rabbitmq.conf").write_text(config)
        return {
            **os.environ,
            "HOME": folder,  # the Erlang cookie
            "RABBITMQ_NODENAME": f"cos-relay-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": f"{folder}/mnesia",
            "RABBITMQ_LOG_BASE": f"{folder}/logs",
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PLUGINS_EXPAND_DIR": f"{folder}/plugins",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{folder}/enabled_plugins",
            "RABBITMQ_CONFIG_FILE": f"{folder}/rabbitmq",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{folder}/advanced.config",
            "RABBITMQ_PID_FILE": f"{folder}/pid",
        }

    def command(self) -> list[str]:
        return [str(self.program)]

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"amqps://guest:guest@localhost:{self.port}/"
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def remove(self) -> None:
        super().remove()
        if self.epmd is not None:
            self.epmd.kill()
            self.epmd.wait()
            self.epmd = None
