"""Real servers on loopback for tests: uvicorn in a thread, or cos-relay in a child process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadServer:
    """A uvicorn server serving ``app`` on 127.0.0.1 from a background thread."""

    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


@contextlib.contextmanager
def serving(app: ASGIApp) -> Iterator[ThreadServer]:
    server = ThreadServer(app).start()
    try:
        yield server
    finally:
        server.stop()


class ProcessServer:
    """``cos-relay serve`` in a child process, for restarts, kills and the CLI's own startup."""

    def __init__(self, db_path: Path, *, args: tuple[str, ...] = (), env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.db_path = db_path
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.output = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProcessServer:
        command = [sys.executable, "-m", "relay", "serve", "--port", str(self.port), "--db", str(self.db_path)]
        self.process = subprocess.Popen(
            [*command, *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cos-relay exited: {self.process.stdout.read() if self.process.stdout else ''}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("cos-relay did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop the process and return everything it printed."""
        if self.process is None:
            return self.output
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.output += out or ""
        self.process = None
        return self.output
