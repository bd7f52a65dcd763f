"""What the kernel says about a server process: memory (now and peak) and CPU time, from /proc."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

MIB = 1024 * 1024
_TICKS = os.sysconf("SC_CLK_TCK")


def _status(pid: int, field: str) -> int:
    """A ``kB`` line of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"{field} not in /proc/{pid}/status")


def rss(pid: int) -> int:
    """Resident memory now, in bytes."""
    return _status(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    """The most resident memory since start or the last `reset_peak_rss`, in bytes."""
    return _status(pid, "VmHWM")


def reset_peak_rss(pid: int) -> bool:
    """Start a new peak-RSS window (Linux 4.0+, needs to own the process or be root); False if refused."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    return False


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of the whole line
    return (utime + stime) / _TICKS


def cpu_share(pid: int, seconds: float) -> float:
    """The fraction of one core ``pid`` used over the next ``seconds`` (blocks that long)."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def children(pid: int) -> list[int]:
    """Direct child processes (uvicorn's workers under its supervisor)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found
