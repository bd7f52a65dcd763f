"""Benchmarks against same-run baselines: ``python -m bench`` runs the suite (see bench/__main__.py)."""

from __future__ import annotations
