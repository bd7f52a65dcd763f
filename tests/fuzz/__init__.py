"""Fuzzing the parse + validate path: a shared target, and a coverage-guided runner (``python -m tests.fuzz.run``)."""
