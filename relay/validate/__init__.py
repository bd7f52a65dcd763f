"""Schema validation and typed conversion of COS callback bodies."""

from __future__ import annotations
