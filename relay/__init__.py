"""cos-relay: receive Tencent COS processing callbacks, record them, relay them as signed events."""

from __future__ import annotations

__version__ = "0.1.0"
