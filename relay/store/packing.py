"""Bodies and job details compressed at rest.

A 2-5 KB row leaves most of a 4 KB SQLite page unusable by the next one, so a raw callback, its job's
detail and its event took three pages between them. zlib (the standard library's) shrinks COS XML and
event JSON about 3x, and CPython releases the GIL while it works, so the writer thread packs without
holding up the event loop. Rows written before migration m007 are left as they were (their ``*_packed``
column is 0). PostgreSQL compresses large values itself (TOAST): only SQLite packs (`relay.store.db.Dialect`).
"""

from __future__ import annotations

import zlib

#: The fastest level: nearly all of the gain, for the least CPU.
LEVEL = 1


def pack(data: bytes) -> bytes:
    return zlib.compress(data, LEVEL)


def unpack(data: bytes, packed: int) -> bytes:
    return zlib.decompress(data) if packed else bytes(data)


def unpack_prefix(data: bytes | None, packed: int, limit: int) -> bytes:
    """The first ``limit`` bytes, inflating no more than that."""
    if data is None:
        return b""
    if not packed:
        return bytes(data[:limit])
    return zlib.decompressobj().decompress(data, limit)
