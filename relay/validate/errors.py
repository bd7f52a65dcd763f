"""Violation records shared by the fast (compiled) and slow (xmlschema) validators."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    """One schema violation: where (element path, 1-based indices) and why."""

    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


class SchemaViolation(Exception):
    """A body breaks the callback schema; carries at least one `Violation`."""

    violations: tuple[Violation, ...]

    def __init__(self, violations: tuple[Violation, ...]) -> None:
        if not violations:
            raise ValueError("SchemaViolation needs at least one violation")
        super().__init__(str(violations[0]))
        self.violations = violations

    def __str__(self) -> str:
        return str(self.violations[0])


class UnsupportedSchema(Exception):
    """The XSD uses a construct the fast-path compiler does not implement (raised by load())."""
