"""Real servers on loopback for tests: uvicorn in a thread, or cos-relay in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

from bench.process import free_port as free_port  # tests take ports where servers do
from relay.store.records import PostgresUrl, Target

#: How long a `cos-relay serve` may take to answer /healthz. A few seconds here; on a CI machine running three
#: test workers, with coverage in every process and several workers each importing and compiling the schema,
#: 20 s has not always been enough. Only a failing start waits this long.
START_WITHIN = 60


#: What starts coverage in a Python child (the .pth file coverage installs reads them).
COVERAGE_VARIABLES = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def unmeasured(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables that start coverage in every Python child (``patch = ["subprocess"]`` in
    pyproject.toml), for a child whose coverage adds nothing: schemathesis generating requests (it runs none of
    relay, and the tracer doubled its CPU), the benchmarks (what they run, other tests cover)."""
    return {key: value for key, value in env.items() if key not in COVERAGE_VARIABLES}


def wait_until(
    check: Callable[[], bool], timeout: float = 30.0, what: str = "the condition", interval: float = 0.05
) -> None:
    """Poll ``check`` until it holds; fail the test if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(interval)


def listening_socket(port: int | None = None) -> socket.socket:
    """A socket bound on 127.0.0.1 (``port``, or a free one) for a server to listen on: held from here on, the
    port cannot be taken between choosing it and serving."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart on the same port, past TIME_WAIT
    try:
        sock.bind(("127.0.0.1", port or free_port()))
    except OSError:
        sock.close()
        raise
    return sock


class PromptServer(uvicorn.Server):
    """uvicorn's server, stopped without its two waits: uvicorn looks at ``should_exit`` every 0.1 s, then gives
    open connections 0.1 s more even when there are none. A test stops its servers after closing its clients,
    and most tests start one or two: these waits were most of a serial test's time (tests/test_relay.py and
    tests/test_api_subscribers.py on SQLite: 48 s, without them 33-38 s, at the same CPU). With a connection
    or a task still open, uvicorn's own graceful shutdown runs, unchanged."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def stop(self) -> None:
        """Ask the server to stop, from any thread."""
        self.should_exit = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed: it has stopped
                loop.call_soon_threadsafe(stopping.set)

    async def main_loop(self) -> None:
        # Both exist before the first look at should_exit: a stop() after that look always wakes the wait.
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        while not await self.on_tick(0):  # tick 0 refreshes the Date header, as uvicorn's does every second
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets)
            return
        for server in self.servers:
            server.close()
            await server.wait_closed()
        await self.lifespan.shutdown()


class ThreadServer:
    """A uvicorn server serving ``app`` on 127.0.0.1 from a background thread."""

    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self._socket = listening_socket(port)
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, timeout_graceful_shutdown=1
        )
        self.server = PromptServer(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

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
        self.server.stop()
        self._thread.join(timeout=10)
        self._socket.close()


@contextlib.contextmanager
def serving(app: ASGIApp) -> Iterator[ThreadServer]:
    server = ThreadServer(app).start()
    try:
        yield server
    finally:
        server.stop()


def db_text(db: Target) -> str:
    """``--db``'s value for ``db`` (a URL in full: `PostgresUrl` prints without its password)."""
    return db.url if isinstance(db, PostgresUrl) else str(db)


class ProcessServer:
    """``cos-relay serve`` in a child process, for restarts, kills and the CLI's own startup."""

    def __init__(
        self,
        db_path: Target,
        *,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        #: The child's working directory (where a relative SQLite path would land).
        self.cwd = cwd
        #: Run in the child before cos-relay starts (e.g. to lower its resource limits).
        self.preexec_fn = preexec_fn
        self.db_path = db_path
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.output = ""
        # A thread drains the child's output as it comes: a full pipe would block the server's logging.
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProcessServer:
        command = [sys.executable, "-m", "relay", "serve", "--port", str(self.port), "--db", db_text(self.db_path)]
        self.process = subprocess.Popen(
            [*command, *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=self.preexec_fn,
            cwd=self.cwd,
        )
        self._lines = []
        self._reader = threading.Thread(target=self._drain, args=(self.process, self._lines), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_WITHIN
        # One client for all the polls: each new one (`httpx.get`) builds an SSL context, 25 ms of CPU, and a
        # start polls 20-60 times.
        with httpx.Client(timeout=1) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    self._reader.join(timeout=5)
                    raise RuntimeError(f"cos-relay exited: {''.join(self._lines)}")
                with contextlib.suppress(httpx.HTTPError):
                    if probe.get(f"{self.url}/healthz").status_code == 200:
                        return self
                time.sleep(0.05)
        # Killed, not left running: an orphan would load the machine and fail a later test with its ResourceWarning.
        raise RuntimeError(f"cos-relay did not become healthy within {START_WITHIN} s: {self.stop(signal.SIGKILL)}")

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop the process and return everything it printed."""
        if self.process is None:
            return self.output
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        self.output += "".join(self._lines)
        self.process = None
        return self.output

    @property
    def pid(self) -> int:
        assert self.process is not None, "not running"
        return self.process.pid

    @property
    def printed(self) -> str:
        """Everything printed so far, by earlier runs and the running one."""
        return self.output + "".join(self._lines)

    @staticmethod
    def _drain(process: subprocess.Popen[str], lines: list[str]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                lines.append(line)
