"""Give freed heap memory back to the operating system after a large body (glibc ``malloc_trim``).

Parsing a large body allocates hundreds of thousands of small blocks (libxml2 nodes, Python objects).
Once they are freed, glibc keeps the pages for reuse, scattered between blocks still in use, so the
process's RSS stayed where the largest body took it. ``malloc_trim(0)`` returns every free page of
every arena. Elsewhere than glibc (musl, macOS) there is nothing to call and releasing does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def releaser() -> Callable[[], None]:
    """A function that returns free heap pages to the OS; a no-op where the C library has no malloc_trim."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return _nothing
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


def _nothing() -> None:
    pass
