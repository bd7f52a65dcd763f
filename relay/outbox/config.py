"""The declarative TOML config: make the subscribers a file defines exist as written."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relay.domain.destinations import ContentMode, Kind
from relay.domain.subscribers import DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT
from relay.outbox.config_file import read_config
from relay.outbox.service import Subscribers


def apply_config(
    subscribers: Subscribers, path: Path, checked: Mapping[str, dict[str, Any]] | None = None
) -> list[str]:
    """Make the subscribers defined in a TOML file exist as written (declarative).

    The whole file is checked before anything changes, so a bad entry changes nothing.
    Subscribers the file defined before and no longer lists are removed; ones created by the CLI
    or API are left alone unless the file names them. Returns a line per change, for the log.
    ``checked``: what `read_config` made of the file already (serve reads it before opening the database).
    """
    if checked is None:
        checked = read_config(path, subscribers.vet)
    changes = [_apply_entry(subscribers, name, options) for name, options in checked.items()]
    for subscriber in subscribers.all():
        if subscriber.source == "config" and subscriber.name not in checked:
            subscribers.remove(subscriber.name)
            changes.append(f"removed {subscriber.name}")
    return changes


def _apply_entry(subscribers: Subscribers, name: str, options: dict[str, Any]) -> str:
    options = dict(options)
    secret = options.pop("secret", None)
    settings = {
        "types": ["*"],
        "filters": {},
        "max_in_flight": DEFAULT_MAX_IN_FLIGHT,
        "timeout": DEFAULT_TIMEOUT,
        "retry_schedule": None,
        "kind": Kind.WEBHOOK,
        "rate": None,
        "handshake": False,
        "content_mode": ContentMode.STRUCTURED,
        "template": None,
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
