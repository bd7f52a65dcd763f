"""Metrics shared by uvicorn workers: each worker counts into its own files in a directory it is given.

prometheus_client's multiprocess mode finds its directory in ``PROMETHEUS_MULTIPROC_DIR``, read from
``os.environ`` when the first metric is made. cos-relay never writes ``os.environ``: a worker is handed
the directory explicitly and keeps its values in the same files (names and format) prometheus_client's
`MultiProcessCollector` reads and adds up, so /metrics is the sum whichever worker answers.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key


class WorkerFiles:
    """This process's metric files in ``directory``: one per metric type, named as prometheus_client names them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pid = os.getpid()
        # One lock for every value of the process, as prometheus_client's own multiprocess values do.
        self.lock = threading.Lock()
        self._files: dict[str, MmapedDict] = {}

    def file(self, prefix: str) -> MmapedDict:
        if prefix not in self._files:
            self._files[prefix] = MmapedDict(str(self.directory / f"{prefix}_{self.pid}.db"))  # type: ignore[no-untyped-call]
        return self._files[prefix]

    def value(self, typ: str, metric_name: str, name: str, *args: Any, **kwargs: Any) -> FileValue:
        """Made wherever prometheus_client makes a value (``values.ValueClass(...)``)."""
        return FileValue(self, typ, metric_name, name, *args, **kwargs)


class FileValue:
    """One sample's value, kept in this worker's file for its metric type."""

    _multiprocess = True

    def __init__(
        self,
        files: WorkerFiles,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: list[str],
        labelvalues: list[str],
        help_text: str,
        multiprocess_mode: str = "",
        **kwargs: Any,
    ) -> None:
        self._lock = files.lock
        with self._lock:
            self._file = files.file(f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ)
            self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
            self._value, self._timestamp = self._file.read_value(self._key)  # type: ignore[no-untyped-call]

    def inc(self, amount: float) -> None:
        with self._lock:
            self._value += amount
            self._file.write_value(self._key, self._value, 0.0)  # type: ignore[no-untyped-call]

    def set(self, value: float, timestamp: float | None = None) -> None:
        with self._lock:
            self._value = value
            self._file.write_value(self._key, value, timestamp or 0.0)  # type: ignore[no-untyped-call]

    def set_exemplar(self, exemplar: object) -> None:
        """Exemplars are not kept in multiprocess mode (nor by prometheus_client's own)."""

    def get(self) -> float:
        with self._lock:
            return float(self._value)

    def get_exemplar(self) -> None:
        return None


def count_into(directory: Path) -> None:
    """Make every metric created from now on in this process count into ``directory``.

    Called once in each worker process (spawned fresh, before its app and metrics exist): prometheus_client
    takes the class of its values from this module attribute, its only hook for where values live.
    """
    values.ValueClass = WorkerFiles(directory).value
