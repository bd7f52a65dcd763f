"""Plain-text tables for the CLI: left-aligned columns, two spaces apart, no trailing blanks."""

from __future__ import annotations

from collections.abc import Sequence


def render_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """``header`` then ``rows``, each column as wide as its widest value."""
    lines = [[str(value) for value in row] for row in [header, *rows]]
    widths = [max(len(line[index]) for line in lines) for index in range(len(header))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )
