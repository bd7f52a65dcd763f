"""Command-line options made from the settings table (`relay.settings.table.SETTINGS`), for every command."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from relay.api.params import spelled
from relay.domain import numbers
from relay.settings.kinds import Flag
from relay.settings.table import SETTINGS, Setting, setting_named

F = TypeVar("F", bound=Callable[..., Any])


class BadSetting(click.ClickException):
    """A setting's value refused, or one the database cannot work with (a key that does not open its secrets):
    one line naming the option and the variable, exit status 2 (no usage text)."""

    exit_code = 2


class SettingType(click.ParamType[Any]):
    """Reads an option's or environment variable's text with the setting's own parser."""

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.name = setting.kind.metavar.lower()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            if isinstance(value, str):
                return self.setting.parse(value)
            self.setting.check(value)  # a default, or a flag's True
            return value
        except ValueError as error:
            where = param.get_error_hint(ctx) if param is not None and ctx is not None else self.setting.option
            raise BadSetting(f"Invalid value for {where}: {error}") from None

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return self.setting.kind.metavar


class SettingOption(click.Option):
    """An option whose environment variable is read by the setting's parser too, flags included.

    (click reads a flag's variable itself and takes any word it does not know for "off".)
    """

    def value_from_envvar(self, ctx: click.Context) -> Any:
        return self.resolve_envvar_value(ctx)


def setting_option(field: str, *, option: str | None = None, dest: str | None = None, **extra: Any) -> Callable[[F], F]:
    """The option for the setting ``field``: its name, ``RELAY_*`` variable, default, help and parser.

    ``option`` and ``dest`` rename it for commands where another name reads better (``--grace``);
    ``extra`` goes to `click.option` (a ``callback`` that builds something from the value, say).
    """
    setting = setting_named(field)
    declared = (option or setting.option, dest or setting.field)
    if isinstance(setting.kind, Flag):
        extra = {
            "is_flag": True,
            "flag_value": True,
            "default": setting.default,
            "show_default": setting.default_text,
            **extra,
        }
    elif setting.shown is not None:
        extra = {"default": setting.default, "show_default": setting.shown, **extra}
    elif setting.default is not None:
        # The default as an operator would write it, read by the same parser as any other value.
        extra = {"default": setting.default_text, "show_default": True, **extra}
    return click.option(
        *declared,
        cls=SettingOption,
        type=SettingType(setting),
        envvar=setting.env,
        show_envvar=True,
        help=setting.help,
        **extra,
    )


def settings_options(command: F) -> F:
    """Every setting as an option, in the table's order."""
    for setting in reversed(SETTINGS):
        command = setting_option(setting.field)(command)
    return command


#: Where `relay.cli.database.existing_store` finds ``--secret-key-file`` (every command that takes ``--db``).
KEY_FILE = "relay.secret_key_file"


def _remember_key_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    ctx.meta[KEY_FILE] = value


def db_option(command: F) -> F:
    """``--db`` / ``RELAY_DB``, the database every command works on, and ``--secret-key-file`` /
    ``RELAY_SECRET_KEY_FILE``, which opens the secrets in it (kept for `existing_store`, not passed on)."""
    command = setting_option("secret_key_file", expose_value=False, callback=_remember_key_file)(command)
    return setting_option("db_path")(command)


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

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return numbers.decimal(str(value), self.low, self.high)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def one_of(allowed: Sequence[str], what: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """An option callback for a value from ``allowed``, in any case: the value as ``allowed`` spells it, or a
    one-line error listing them (click's Choice prints a usage screen, and matches case exactly)."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        found = spelled(value, allowed)
        if found is None:
            raise click.ClickException(f"{param.opts[0]} {value!r} is not {what}; use one of {', '.join(allowed)}")
        return found

    return check


#: ``--config``: the config file whose ``[[cos]]`` tables name the COS sources (the COS commands').
cos_config_option = click.option(
    "--config",
    "config_path",
    envvar="RELAY_CONFIG",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The config file whose [[cos]] tables name the sources (RELAY_CONFIG).",
)
