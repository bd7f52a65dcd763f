"""COS sources: the buckets whose jobs cos-relay reconciles, confirms and connects, from ``[[cos]]`` tables of the
config file. Each mistake is one `BadSource` line naming the table, the key and the fix (the config file
reader adds the file and line); credentials are read from the file or the environment when named so, and
never appear in a message or a repr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.cos.signing import Credentials
from relay.domain.numbers import ascii_span

#: Every key a [[cos]] table may have.
SOURCE_KEYS = (
    "name",
    "bucket",
    "region",
    "secret_id",
    "secret_key",
    "secret_id_file",
    "secret_key_file",
    "secret_id_env",
    "secret_key_env",
    "endpoint",
    "tags",
    "queues",
    "speech",
    "documents",
    "pictures",
    "workflows",
    "reconcile_every",
    "lookback",
    "confirm",
)
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
#: ``<name>-<APPID>``: COS bucket names are lower-case letters, digits and hyphens; an APPID is digits.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{0,48}-\d{5,20}")
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")
#: Ids of queues, workflows and tags as COS writes them.
_WORD = re.compile(r"[A-Za-z0-9_-]{1,128}")
Refuse = Callable[[str, str], "BadSource"]
DEFAULT_EVERY = 300.0
DEFAULT_LOOKBACK = 86400.0
#: Reconciling more often would make COS's list APIs the load; looking back further than COS keeps jobs, pointless.
MIN_EVERY, MAX_LOOKBACK = 10.0, 30 * 86400.0


class BadSource(Exception):
    """A [[cos]] table is wrong: ``key`` is what is wrong in it ("" for the table itself)."""

    def __init__(self, index: int, key: str, message: str) -> None:
        where = f"cos[{index}].{key}" if key else f"cos[{index}]"
        super().__init__(f"{where}: {message}")
        self.index = index
        self.key = key


@dataclass(frozen=True)
class CosSource:
    name: str
    bucket: str
    region: str
    credentials: Credentials = field(repr=False)
    endpoint: str
    tags: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    speech: bool = False
    documents: bool = False
    pictures: bool = False
    workflows: tuple[str, ...] = ()
    reconcile_every: float = DEFAULT_EVERY
    lookback: float = DEFAULT_LOOKBACK
    confirm: bool = False


def read_sources(entries: object, environ: Mapping[str, str] = os.environ) -> list[CosSource]:
    """The sources ``entries`` (the parsed ``cos`` key of the config file) define, checked whole."""
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise BadSource(0, "", "cos must be an array of tables, [[cos]]")
    sources: list[CosSource] = []
    for index, entry in enumerate(entries):
        source = _source(index, entry, environ)
        if any(known.name == source.name for known in sources):
            raise BadSource(index, "name", f"{source.name!r} is defined twice: give each source its own name")
        sources.append(source)
    return sources


def _source(index: int, entry: dict[str, Any], environ: Mapping[str, str]) -> CosSource:
    def refuse(key: str, message: str) -> BadSource:
        return BadSource(index, key, message)

    for key in entry:
        if key not in SOURCE_KEYS:
            raise refuse(key, f"unknown key (known: {', '.join(SOURCE_KEYS)})")
    name = _text(entry, "name", _NAME, "a name of lower-case letters, digits, - and _", refuse)
    bucket = _text(entry, "bucket", _BUCKET, "the bucket with its APPID, like examplebucket-1250000000", refuse)
    region = _text(entry, "region", _REGION, "a COS region like ap-guangzhou", refuse)
    endpoint = entry.get("endpoint", f"https://{bucket}.ci.{region}.myqcloud.com")
    if not isinstance(endpoint, str) or not re.fullmatch(r"https?://[^\s/?#]+/?", endpoint):
        raise refuse("endpoint", "a base URL like https://examplebucket-1250000000.ci.ap-guangzhou.myqcloud.com")
    credentials = Credentials(
        _secret(entry, "secret_id", environ, refuse), _secret(entry, "secret_key", environ, refuse)
    )
    tags, queues, workflows = (_words(entry, key, refuse) for key in ("tags", "queues", "workflows"))
    flags = {key: _flag(entry, key, refuse) for key in ("speech", "documents", "pictures", "confirm")}
    if not (tags or workflows or flags["speech"] or flags["documents"] or flags["pictures"]):
        raise refuse("", "nothing to reconcile: give tags (media job Tags), workflows, speech, documents or pictures")
    every = _span(entry, "reconcile_every", DEFAULT_EVERY, refuse)
    lookback = _span(entry, "lookback", DEFAULT_LOOKBACK, refuse)
    if every < MIN_EVERY:
        raise refuse("reconcile_every", f"at least {MIN_EVERY:.0f}s: each run lists every job in the lookback")
    if lookback > MAX_LOOKBACK:
        raise refuse("lookback", "at most 30d")
    if lookback < every:
        raise refuse("lookback", "at least reconcile_every, or jobs created between two runs are never listed")
    return CosSource(
        name=name,
        bucket=bucket,
        region=region,
        credentials=credentials,
        endpoint=endpoint.rstrip("/"),
        tags=tags,
        queues=queues,
        workflows=workflows,
        reconcile_every=every,
        lookback=lookback,
        **flags,
    )


def _text(entry: dict[str, Any], key: str, form: re.Pattern[str], what: str, refuse: Refuse) -> str:
    value = entry.get(key)
    if value is None:
        raise refuse("" if key == "name" else key, f"{key} is required: {what}")
    if not isinstance(value, str) or not form.fullmatch(value):
        raise refuse(key, f"{what}, not {value!r}"[:300])
    return value


def _secret(entry: dict[str, Any], key: str, environ: Mapping[str, str], refuse: Refuse) -> str:
    given = [form for form in (key, f"{key}_file", f"{key}_env") if form in entry]
    if not given:
        raise refuse("", f"{key} is required: give {key}, {key}_file (a file holding it) or {key}_env (a variable)")
    if len(given) > 1:
        raise refuse(given[1], f"give one of {', '.join(given)}")
    form, value = given[0], entry[given[0]]
    if not isinstance(value, str) or not value.strip():
        raise refuse(form, "must be a non-empty string")
    if form.endswith("_env"):
        secret = environ.get(value, "").strip()
        if not secret:
            raise refuse(form, f"the environment variable {value} is not set")
        return secret
    if form.endswith("_file"):
        try:
            secret = Path(value).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise refuse(form, f"cannot read {value}: {reason}") from None
        if not secret:
            raise refuse(form, f"{value} is empty")
        return secret
    return value.strip()


def _words(entry: dict[str, Any], key: str, refuse: Refuse) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(word, str) and _WORD.fullmatch(word) for word in value):
        raise refuse(key, f'a list of {key[:-1]} ids, like ["a1", "b2"]')
    if len(set(value)) != len(value):
        raise refuse(key, "names one twice")
    return tuple(value)


def _flag(entry: dict[str, Any], key: str, refuse: Refuse) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise refuse(key, f"true or false, not {value!r}")
    return value


def _span(entry: dict[str, Any], key: str, default: float, refuse: Refuse) -> float:
    value = entry.get(key)
    if value is None:
        return default
    seconds = ascii_span(value) if isinstance(value, str) else None
    if seconds is None or seconds <= 0:
        raise refuse(key, f"a duration like 5m, 1h or 24h, not {value!r}")
    return float(seconds)
