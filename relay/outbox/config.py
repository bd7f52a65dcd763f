"""The declarative TOML config: make the subscribers a file defines exist as written."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from relay.domain.subscribers import DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT
from relay.errors import BadSubscriber
from relay.outbox.options import check_options
from relay.outbox.service import Subscribers


def apply_config(subscribers: Subscribers, path: Path) -> list[str]:
    """Make the subscribers defined in a TOML file exist as written (declarative).

    The whole file is checked before anything changes, so a bad entry changes nothing.
    Subscribers the file defined before and no longer lists are removed; ones created by the CLI
    or API are left alone unless the file names them. Returns a line per change, for the log.
    """
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadSubscriber(f"cannot read {path}: {exc}") from None
    entries = document.get("subscribers", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise BadSubscriber("`subscribers` must be an array of tables ([[subscribers]])")
    checked: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name = entry.get("name")
        if not isinstance(name, str) or not isinstance(entry.get("url"), str):
            raise BadSubscriber("every [[subscribers]] entry needs a name and a url (strings)")
        if name in checked:
            raise BadSubscriber(f"{name}: defined twice")
        options = {key: value for key, value in entry.items() if key != "name"}
        try:
            checked[name] = check_options(options)
        except BadSubscriber as exc:
            raise BadSubscriber(f"{name}: {exc.detail}") from None
        subscribers.vet(entry["url"])
    changes = [_apply_entry(subscribers, name, options) for name, options in checked.items()]
    for subscriber in subscribers.all():
        if subscriber.source == "config" and subscriber.name not in checked:
            subscribers.remove(subscriber.name)
            changes.append(f"removed {subscriber.name}")
    return changes


def _apply_entry(subscribers: Subscribers, name: str, options: dict[str, Any]) -> str:
    secret = options.pop("secret", None)
    settings = {
        "types": ["*"],
        "filters": {},
        "max_in_flight": DEFAULT_MAX_IN_FLIGHT,
        "timeout": DEFAULT_TIMEOUT,
        "retry_schedule": None,
        **options,
    }
    existing = subscribers.find(name)
    if existing is None:
        url = settings.pop("url")
        subscribers.add(name, url, secret=secret, source="config", **settings)
        return f"added {name}"
    subscribers.update(name, {**settings, "source": "config"})
    if secret and secret != existing.secret:
        subscribers.rotate_secret(name, secret)
    return f"updated {name}"
