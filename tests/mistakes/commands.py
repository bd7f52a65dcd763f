"""Running ``cos-relay`` for real (a child process), for the mistakes an operator makes at a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def cos_relay(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``cos-relay ARGS`` to completion: its exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
