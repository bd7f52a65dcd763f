"""A subscriber that misbehaves on purpose, written on raw sockets so it can do what no framework would."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections import Counter

#: How long a hostile answer may drag on at most (bounded, like every loop in the tests).
MAX_SECONDS = 600.0
HUGE = 100 * 1024 * 1024
REDIRECT_TO = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


def _read_request(stream: socket.socket) -> str | None:
    """Read one request (headers and a Content-Length body); return its path, or None if the client left."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = stream.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = stream.recv(65536)
        if not chunk:
            return None
        body += chunk
    return lines[0].split(" ")[1]


class _Handler(socketserver.BaseRequestHandler):
    server: HostileServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(MAX_SECONDS)
        with contextlib.suppress(OSError):
            path = _read_request(sock)
            if path is None:
                return
            self.server.count(path)
            kind = path.strip("/").split("/")[0]
            {"hang": self._hang, "trickle": self._trickle, "huge": self._huge, "redirect": self._redirect}.get(
                kind, self._not_found
            )(sock)

    def _hang(self, sock: socket.socket) -> None:
        """Never answer; return when the client gives up (closes) or the server stops."""
        sock.settimeout(0.5)
        deadline = time.monotonic() + MAX_SECONDS
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                if not sock.recv(1024):
                    return

    def _trickle(self, sock: socket.socket) -> None:
        """A whole response, one byte per second."""
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\nConnection: close\r\n\r\n" + b"x" * 600
        for byte in response:
            if self.server.stopping.wait(1.0):
                return
            sock.sendall(bytes([byte]))

    def _huge(self, sock: socket.socket) -> None:
        """A 500 with a 100 MB body (so it is retried, and read again, all through the test)."""
        sock.sendall(
            f"HTTP/1.1 500 Internal Server Error\r\nContent-Length: {HUGE}\r\nConnection: close\r\n\r\n".encode()
        )
        block = b"A" * 65536
        sent = 0
        while sent < HUGE and not self.server.stopping.is_set():
            sock.sendall(block)
            sent += len(block)
        self.server.bytes_sent += sent

    def _redirect(self, sock: socket.socket) -> None:
        sock.sendall(
            f"HTTP/1.1 302 Found\r\nLocation: {REDIRECT_TO}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )

    def _not_found(self, sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


class HostileServer(socketserver.ThreadingTCPServer):
    """Paths: /hang (never answers), /trickle (1 byte/s), /huge (500 + 100 MB), /redirect (302 to 169.254.169.254).

    One request per connection (``Connection: close``); the gateway's sender reconnects as it needs to.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.requests: Counter[str] = Counter()
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, path: str) -> None:
        with self._lock:
            self.requests[path] += 1

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
