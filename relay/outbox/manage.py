"""Managing subscribers: the one place the CLI, the admin API and the TOML config all go through."""

from __future__ import annotations

import ipaddress
import socket
import sqlite3
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from yarl import URL

from relay.deliver.signing import generate_secret, secret_key
from relay.deliver.ssrf import AddressPolicy, ForbiddenDestination
from relay.domain.filters import Filter
from relay.domain.retry import check_schedule
from relay.domain.subscribers import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT,
    Subscriber,
    SubscriberSpec,
    SubscriberState,
    check_limits,
)
from relay.errors import Rejected
from relay.store import Store

#: Bulk recovery requeues this many deliveries per transaction, so the writer is never held for long.
RECOVER_BATCH = 500


class BadSubscriber(Rejected):
    """The subscriber definition is not valid."""

    status = 400
    outcome = "bad_request"
    quarantined = False


class UnknownSubscriber(Rejected):
    """No subscriber has that name."""

    status = 404
    outcome = "not_found"
    quarantined = False


class SubscriberExists(Rejected):
    """A subscriber with that name already exists."""

    status = 409
    outcome = "conflict"
    quarantined = False


def vet_destination(policy: AddressPolicy, url: str) -> None:
    """Refuse URLs that are, or resolve to, addresses subscribers may not reach (checked again at connect)."""
    try:
        policy.check_url(url)
        parsed = URL(url)
        host = parsed.host or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                # UnicodeError: the IDNA codec refuses the name (check_url already refuses the known cases).
                raise BadSubscriber(f"the host {host!r} does not resolve") from None
            for info in infos:
                policy.check_ip(str(info[4][0]))
    except ForbiddenDestination as exc:
        raise BadSubscriber(f"the URL is not allowed: {exc}") from None


class Subscribers:
    """Create, change and replay subscribers; every rule about them is enforced here."""

    def __init__(
        self,
        store: Store,
        policy: AddressPolicy,
        clock: Callable[[], datetime],
        *,
        secret_grace: timedelta = timedelta(hours=24),
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._policy = policy
        self._clock = clock
        self._secret_grace = secret_grace
        #: Called after every change, so a running worker looks at the subscribers again at once.
        self._on_change = on_change

    def all(self) -> list[Subscriber]:
        return self._store.list_subscribers()

    def get(self, name: str) -> Subscriber:
        subscriber = self._store.get_subscriber(name)
        if subscriber is None:
            raise UnknownSubscriber(f"no subscriber is named {name!r}")
        return subscriber

    def add(
        self,
        name: str,
        url: str,
        *,
        secret: str | None = None,
        types: Sequence[str] | None = None,
        filters: Mapping[str, str] | Sequence[str] = (),
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout: float = DEFAULT_TIMEOUT,
        retry_schedule: Sequence[float] | None = None,
        source: str = "api",
    ) -> Subscriber:
        """Create a subscriber. The returned value carries the secret: show it once, then only masked.

        ``types`` None means every event type.
        """
        vet_destination(self._policy, url)
        try:
            if secret is not None:
                secret_key(secret)
            spec = SubscriberSpec(
                name=name,
                url=url,
                secret=secret or generate_secret(),
                filter=_filter(types, filters),
                max_in_flight=max_in_flight,
                timeout=timeout,
                retry_schedule=None if retry_schedule is None else check_schedule(retry_schedule),
                source=source,
            )
        except (ValueError, TypeError) as exc:
            raise BadSubscriber(str(exc)) from None
        try:
            subscriber = self._store.add_subscriber(spec, self._clock())
        except sqlite3.IntegrityError:
            raise SubscriberExists(f"a subscriber named {name!r} already exists") from None
        self._on_change()
        return subscriber

    def update(self, name: str, changes: Mapping[str, Any]) -> Subscriber:
        """Change url, types, filters, max_in_flight, timeout or retry_schedule."""
        current = self.get(name)
        columns: dict[str, Any] = {}
        try:
            if "url" in changes:
                vet_destination(self._policy, str(changes["url"]))
                columns["url"] = str(changes["url"])
            if "types" in changes or "filters" in changes:
                built = _filter(
                    changes.get("types", current.filter.types), changes.get("filters", current.filter.match)
                )
                columns["types"], columns["filters"] = built.types, built.match
            for key in ("max_in_flight", "timeout", "retry_schedule", "source"):
                if key in changes:
                    columns[key] = changes[key]
            unknown = set(changes) - {"url", "types", "filters", "max_in_flight", "timeout", "retry_schedule", "source"}
            if unknown:
                raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
            check_limits(
                columns.get("max_in_flight", current.max_in_flight),
                columns.get("timeout", current.timeout),
                columns.get("retry_schedule", current.retry_schedule),
            )
            if columns.get("retry_schedule") is not None:
                columns["retry_schedule"] = check_schedule(columns["retry_schedule"])
        except (ValueError, TypeError) as exc:
            raise BadSubscriber(str(exc)) from None
        updated = self._store.update_subscriber(name, columns, self._clock())
        self._on_change()
        return updated or self.get(name)

    def pause(self, name: str) -> Subscriber:
        return self._set_state(name, SubscriberState.PAUSED)

    def resume(self, name: str) -> Subscriber:
        """Enable a paused or disabled subscriber; its held deliveries flow again."""
        return self._set_state(name, SubscriberState.ENABLED)

    def _set_state(self, name: str, state: SubscriberState) -> Subscriber:
        subscriber = self._store.set_subscriber_state(name, state, self._clock())
        if subscriber is None:
            raise UnknownSubscriber(f"no subscriber is named {name!r}")
        self._on_change()
        return subscriber

    def remove(self, name: str) -> int:
        """Delete a subscriber; returns how many unfinished deliveries were cancelled."""
        cancelled = self._store.remove_subscriber(name, self._clock())
        if cancelled is None:
            raise UnknownSubscriber(f"no subscriber is named {name!r}")
        self._on_change()
        return cancelled

    def rotate_secret(self, name: str, secret: str | None = None) -> Subscriber:
        """New signing secret; the previous one keeps signing during the grace period."""
        try:
            if secret is not None:
                secret_key(secret)
        except ValueError as exc:
            raise BadSubscriber(str(exc)) from None
        now = self._clock()
        subscriber = self._store.rotate_secret(name, secret or generate_secret(), now + self._secret_grace, now)
        if subscriber is None:
            raise UnknownSubscriber(f"no subscriber is named {name!r}")
        self._on_change()
        return subscriber

    def recover(self, name: str, since: datetime, progress: Callable[[int], None] = lambda done: None) -> int:
        """Queue again every failed or dead delivery created since ``since``; returns how many."""
        subscriber = self.get(name)
        total, after = 0, 0
        while ids := self._store.recoverable(subscriber.id, since, after, RECOVER_BATCH):
            total += self._store.requeue(ids, self._clock())
            after = ids[-1]
            progress(total)
            self._on_change()
        return total

    def retry_delivery(self, delivery_id: int) -> dict[str, Any]:
        """Queue one delivery again now (delivered, dead or waiting for a retry)."""
        if self._store.get_delivery(delivery_id) is None:
            raise UnknownSubscriber(f"no delivery has id {delivery_id}")
        if not self._store.requeue([delivery_id], self._clock()):
            raise BadSubscriber(f"delivery {delivery_id} is in flight or cancelled")
        self._on_change()
        delivery = self._store.get_delivery(delivery_id)
        assert delivery is not None
        return delivery

    def apply_config(self, path: Path) -> list[str]:
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
            vet_destination(self._policy, entry["url"])
        changes = [self._apply_entry(name, options) for name, options in checked.items()]
        for subscriber in self.all():
            if subscriber.source == "config" and subscriber.name not in checked:
                self.remove(subscriber.name)
                changes.append(f"removed {subscriber.name}")
        return changes

    def _apply_entry(self, name: str, options: dict[str, Any]) -> str:
        secret = options.pop("secret", None)
        settings = {
            "types": ["*"],
            "filters": {},
            "max_in_flight": DEFAULT_MAX_IN_FLIGHT,
            "timeout": DEFAULT_TIMEOUT,
            "retry_schedule": None,
            **options,
        }
        existing = self._store.get_subscriber(name)
        if existing is None:
            url = settings.pop("url")
            self.add(name, url, secret=secret, source="config", **settings)
            return f"added {name}"
        self.update(name, {**settings, "source": "config"})
        if secret and secret != existing.secret:
            self.rotate_secret(name, secret)
        return f"updated {name}"


#: The options a subscriber definition may carry (JSON body or TOML entry), besides its name.
OPTIONS = ("url", "secret", "types", "filters", "max_in_flight", "timeout", "retry_schedule")


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Type-check user-written subscriber options, with messages a user understands."""

    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise BadSubscriber(f"unknown field(s): {', '.join(sorted(unknown))}")
    checked = dict(options)
    if "types" in checked and isinstance(checked["types"], str):
        checked["types"] = [checked["types"]]  # one type written as a plain string
    rules: dict[str, tuple[Callable[[Any], bool], str]] = {
        "url": (lambda v: isinstance(v, str), "a string"),
        "secret": (lambda v: isinstance(v, str), "a string (whsec_...)"),
        "types": (
            lambda v: isinstance(v, list) and bool(v) and all(isinstance(t, str) for t in v),
            "a list of event types",
        ),
        "filters": (
            lambda v: (
                isinstance(v, dict | list)
                and all(isinstance(x, str) for x in (v.values() if isinstance(v, dict) else v))
            ),
            "an object of strings or a list of KEY=VALUE strings",
        ),
        "max_in_flight": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
        "timeout": (number, "a number of seconds"),
        "retry_schedule": (lambda v: v is None or (isinstance(v, list) and all(map(number, v))), "a list of seconds"),
    }
    for key, value in checked.items():
        valid, expected = rules[key]
        if not valid(value):
            raise BadSubscriber(f"{key} must be {expected}")
    # Ranges too, so that a config file with one bad entry is refused before any entry is applied.
    try:
        check_limits(
            checked.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT),
            checked.get("timeout", DEFAULT_TIMEOUT),
            checked.get("retry_schedule"),
        )
    except ValueError as exc:
        raise BadSubscriber(str(exc)) from None
    return checked


def _filter(types: Sequence[str] | None, filters: Mapping[str, str] | Sequence[str]) -> Filter:
    types = ("*",) if types is None else tuple(types)
    if isinstance(filters, Mapping):
        return Filter(types, dict(filters))
    return Filter.parse(types, filters)
