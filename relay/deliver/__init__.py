"""Deliver: the worker that claims, signs and sends events over HTTP (SSRF-guarded) and records each attempt."""
