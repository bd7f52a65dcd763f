"""Reading the config TOML file (``[[subscribers]]`` and ``[[cos]]`` sources): every mistake is one `BadSubscriber`
naming the file, line and key.

Checked whole before anything is applied, so a typo (``[[subscriber]]``, ``filtres``) stops the start
instead of silently running with fewer subscribers or filters.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.cos.sources import BadSource, CosSource, read_sources
from relay.deliver.signing import secret_key
from relay.domain.destinations import ROBOTS, Kind
from relay.domain.errors import BadSubscriber
from relay.domain.filters import FILTER_KEYS
from relay.outbox.options import OPTIONS, check_options

#: Keys of a [[subscribers]] entry: the options, its name, and two ways to name a secret without writing it.
ENTRY_KEYS = ("name", *OPTIONS, "secret_file", "secret_env")
_TOML_PLACE = re.compile(r"\(at line (\d+), column (\d+)\)$")


class ConfigFile:
    """One file's text, for turning a key path into the line it is written on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadSubscriber(f"{path}: cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise BadSubscriber(f"{path}: is not UTF-8 text") from None
        self.lines = self.text.splitlines()

    def refuse(self, message: str, line: int | None = None) -> BadSubscriber:
        return BadSubscriber(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")

    def parse(self) -> dict[str, Any]:
        try:
            return tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            place = _TOML_PLACE.search(message)
            if place is None:
                raise self.refuse(f"not valid TOML: {message}") from None
            reason = message[: place.start()].strip()
            raise BadSubscriber(f"{self.path}:{place[1]}:{place[2]}: not valid TOML: {reason}") from None

    def line_of(self, key: str, entry: int | None = None, table: str = "subscribers") -> int | None:
        """The line ``key`` is written on: at the top level, or in the ``entry``-th [[``table``]] table."""
        start, end = 0, len(self.lines)
        if entry is not None:
            header = re.compile(rf"\s*\[\[\s*{table}\s*\]\]")
            headers = [n for n, line in enumerate(self.lines) if header.match(line)]
            if entry >= len(headers):
                return None  # written inline: no line of its own
            start = headers[entry]
            end = headers[entry + 1] if entry + 1 < len(headers) else end
            if key == "":
                return start + 1
        written = re.compile(rf"\s*(\[+\s*({table}\.)?{re.escape(key)}\s*[\].]|\"?{re.escape(key)}\"?\s*[=.])")
        for number in range(start, end):
            if written.match(self.lines[number]):
                return number + 1
        return None


def read_config(path: Path, vet: Callable[[str, Kind], None]) -> dict[str, dict[str, Any]]:
    """Each subscriber the file defines, by name, with its options checked (secrets read from files and
    the environment) and its URL vetted by ``vet``; `BadSubscriber` with file, line and key for the first
    mistake."""
    config = ConfigFile(path)
    document = config.parse()
    for key in document:
        if key not in ("subscribers", "cos"):
            hint = "; the table is [[subscribers]] (plural)" if key == "subscriber" else ""
            raise config.refuse(f"{key}: unknown key (known: subscribers, cos){hint}", config.line_of(key))
    _sources(config, document)  # checked at the start too: a mistake in [[cos]] stops it like one in a subscriber
    entries = document.get("subscribers", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise config.refuse("subscribers: must be an array of tables, [[subscribers]]", config.line_of("subscribers"))
    checked: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        name, options = _entry(config, index, entry, vet)
        if name in checked:
            raise config.refuse(f"subscribers[{index}].name: {name!r} is defined twice", config.line_of("name", index))
        checked[name] = options
    return checked


def read_cos_sources(path: Path) -> list[CosSource]:
    """The COS sources (``[[cos]]`` tables) the file defines, checked whole; `BadSubscriber` with file, line and
    key for the first mistake."""
    config = ConfigFile(path)
    return _sources(config, config.parse())


def _sources(config: ConfigFile, document: dict[str, Any]) -> list[CosSource]:
    try:
        return read_sources(document.get("cos", []))
    except BadSource as error:
        line = config.line_of(error.key.partition(".")[0], error.index, table="cos") if error.key else None
        line = line or config.line_of("", error.index, table="cos") or config.line_of("cos")
        raise config.refuse(str(error), line) from None


def _entry(
    config: ConfigFile, index: int, entry: dict[str, Any], vet: Callable[[str, Kind], None]
) -> tuple[str, dict[str, Any]]:
    def refuse(key: str, message: str) -> BadSubscriber:
        where = f"subscribers[{index}].{key}" if key else f"subscribers[{index}]"
        return config.refuse(f"{where}: {message}", config.line_of(key.partition(".")[0], index))

    for key in entry:
        if key not in ENTRY_KEYS:
            raise refuse(key, f"unknown key (known: {', '.join(ENTRY_KEYS)})")
    for key in ("name", "url"):
        if not isinstance(entry.get(key), str):
            raise refuse(key if key in entry else "", f"{key} is required (a string)")
    options = {key: value for key, value in entry.items() if key in OPTIONS}
    given = [key for key in ("secret", "secret_file", "secret_env") if key in entry]
    if len(given) > 1:
        raise refuse(given[1], f"give one of {', '.join(given)}")
    if given and given[0] != "secret":
        options["secret"] = _secret(given[0], entry[given[0]], lambda message: refuse(given[0], message))
    filters = options.get("filters")
    if isinstance(filters, dict):
        for key in filters:
            if key not in FILTER_KEYS:
                raise refuse(f"filters.{key}", f"unknown filter key (known: {', '.join(FILTER_KEYS)})")
    for key, value in options.items():
        try:
            check_options({key: value})
            if key == "secret" and entry.get("kind", Kind.WEBHOOK) not in ROBOTS:
                secret_key(value)  # a robot's secret is its platform's, in the platform's form
        except BadSubscriber as exc:
            raise refuse(key, exc.detail) from None
        except ValueError as exc:
            raise refuse(given[0] if given else key, str(exc)) from None
    try:
        checked = check_options(options)
    except BadSubscriber as exc:
        raise refuse("", exc.detail) from None
    try:
        vet(entry["url"], checked.get("kind", Kind.WEBHOOK))
    except BadSubscriber as exc:
        raise refuse("url", exc.detail) from None
    return entry["name"], checked


def _secret(key: str, value: object, refuse: Callable[[str], BadSubscriber]) -> str:
    if not isinstance(value, str) or not value:
        raise refuse("must be a non-empty string")
    if key == "secret_env":
        secret = os.environ.get(value)
        if not secret:
            raise refuse(f"the environment variable {value} is not set")
        return secret.strip()
    try:
        return Path(value).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise refuse(f"cannot read {value}: {reason}") from None
