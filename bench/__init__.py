"""Benchmarks (run as scripts, e.g. python bench/validation.py)."""

from __future__ import annotations
