"""Child processes for benchmarks: start, wait until they answer, stop (always, even on errors)."""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

#: Process groups of the servers this process started and has not stopped yet (see CpuMeter).
SERVERS: set[int] = set()


#: Ports a server started here may take: below Linux's ephemeral range (32768-60999), which the kernel hands out
#: to outgoing connections. A port taken from that range (``bind(0)``), freed and bound again by the server may
#: meanwhile become the local port of any client's connection: a CI run met "address already in use" that way.
_PORTS = range(20000, 32768)


def free_port() -> int:
    """A loopback port nothing listens on now, outside the kernel's ephemeral range."""
    for _ in range(200):
        port = random.choice(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1}")


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def wait_for_http(port: int, process: subprocess.Popen[bytes], path: str = "/healthz", timeout: float = 30.0) -> None:
    """Until ``GET path`` gets any HTTP answer (a worker serves requests, not just a bound socket)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", path)
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
        finally:
            connection.close()
    raise RuntimeError(f"nothing answers HTTP on port {port}")


def clean_environment() -> dict[str, str]:
    """This process's environment without settings meant for a gateway (RELAY_*, the metrics directory)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RELAY_") and name != "PROMETHEUS_MULTIPROC_DIR"
    }


def group_members(group: int) -> list[int]:
    """Processes still in process group ``group`` (from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if len(fields) > 2 and int(fields[2]) == group:
            members.append(int(stat.parent.name))
    return members


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the child's own process group (uvicorn workers included), SIGKILL whatever lingers."""
    group = process.pid  # started with start_new_session: the child leads its own group
    SERVERS.discard(group)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        process.wait()
        return
    # Workers of a multi-process server may outlive their supervisor: give them a moment, then end them.
    deadline = time.monotonic() + 5
    while (members := group_members(group)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running(args: Sequence[str], port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python args...`` until the block ends; it must listen on ``port``. Output is discarded."""
    process = subprocess.Popen(
        [sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    SERVERS.add(process.pid)
    try:
        wait_for_port(port)
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def serving(
    args: Sequence[str],
    port: int,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/healthz",
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python args...`` (an HTTP server on ``port``) with its output in ``log`` until the block ends.

    The output goes to a file, never a pipe: an info-level server logs a line per request and would
    block on a pipe nobody reads.
    """
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, *args],
            env={**clean_environment(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    SERVERS.add(process.pid)
    try:
        wait_for_http(port, process, ready_path)
        yield process
    except BaseException:
        stop(process)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        if tail:
            print(f"--- last output of {' '.join(args[:3])} ---\n{tail}", file=sys.stderr)
        raise
    else:
        stop(process)


def status_kib(pid: int, field: str) -> int:
    """A memory figure from /proc/<pid>/status, e.g. VmRSS or VmHWM (peak RSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (all threads)


def group_cpu(group: int) -> float:
    """CPU seconds used so far by the processes of a process group (a server and its workers)."""
    return sum(_process_cpu(pid) for pid in group_members(group))


def _ours() -> float:
    """CPU seconds used by this process, its waited-for children (wrk, generators) and running servers."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    servers = sum(group_cpu(group) for group in list(SERVERS))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + servers


class CpuMeter:
    """How much CPU the rest of the machine (other people's work) used during a measurement, in cores.

    Everything busy on the machine, minus this process, the children it waited for (load generators)
    and the servers it runs. Linux only; ``None`` elsewhere.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    def __enter__(self) -> CpuMeter:
        try:
            self._start = (time.monotonic(), _machine_busy(), _ours())
        except (OSError, ValueError):
            self._start = None
        self.others: float | None = None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._start is None:
            return
        started, busy, ours = self._start
        elapsed = time.monotonic() - started
        if elapsed > 0:
            others = (_machine_busy() - busy) - (_ours() - ours)
            self.others = max(0.0, others / elapsed)
