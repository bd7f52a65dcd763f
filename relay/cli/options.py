"""Options, and option types, shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from relay import numbers

F = TypeVar("F", bound=Callable[..., object])


def db_option(command: F) -> F:
    return click.option(
        "--db",
        "db_path",
        envvar="RELAY_DB",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path("cos-relay.db"),
        show_default=True,
        help="SQLite database file (env RELAY_DB).",
    )(command)


class Whole(click.ParamType[int]):
    """A whole number in a range, ASCII digits only (click's INT takes '٣', '1_000' and ' 7 ')."""

    name = "integer"

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return numbers.whole(str(value), self.low, self.high)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Decimal(click.ParamType[float]):
    """A finite number in a range, ASCII only (click's FLOAT takes 'nan', 'inf' and '1e308')."""

    name = "number"

    def __init__(self, low: float, high: float, *, above_low: bool = False) -> None:
        self.low, self.high, self.above_low = low, high, above_low

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return numbers.decimal(str(value), self.low, self.high, above_low=self.above_low)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
