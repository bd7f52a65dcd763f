"""Managing subscribers: the one place the CLI, the admin API and the TOML config all go through."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from relay.deliver.robots.templates import check_template
from relay.deliver.signing import generate_secret, secret_key
from relay.deliver.ssrf import AddressPolicy
from relay.domain.destinations import (
    SIGNING_ROBOTS,
    ContentMode,
    Kind,
    Rate,
    check_kind_options,
    check_scheme,
    handshake_verdict,
)
from relay.domain.errors import BadSubscriber, NotFound, SubscriberExists, UnknownDelivery, UnknownSubscriber
from relay.domain.retry import check_schedule
from relay.domain.subscribers import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT,
    Subscriber,
    SubscriberSpec,
    SubscriberState,
    check_limits,
)
from relay.outbox.destinations import vet_destination
from relay.outbox.options import build_filter
from relay.store import Store
from relay.store.answers import DeliveryWithAttempts
from relay.store.failures import StoreConflict
from relay.store.records import SubscriberChanges

#: Options `Subscribers.update` takes as they are (checked together after).
SIMPLE_CHANGES = (
    "max_in_flight",
    "timeout",
    "retry_schedule",
    "source",
    "store_response",
    "rate",
    "handshake",
    "content_mode",
    "template",
)
#: Bulk recovery requeues this many deliveries per transaction, so the writer is never held for long.
RECOVER_BATCH = 500


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

    def vet(self, url: str, kind: Kind = Kind.WEBHOOK) -> None:
        """Refuse (`BadSubscriber`) a URL subscribers of ``kind`` may not be sent to."""
        vet_destination(self._policy, url, kind)

    def find(self, name: str) -> Subscriber | None:
        return self._store.get_subscriber(name)

    def all(self) -> list[Subscriber]:
        return self._store.list_subscribers()

    def get(self, name: str) -> Subscriber:
        subscriber = self._store.get_subscriber(name)
        if subscriber is None:
            raise self._unknown(name)
        return subscriber

    def _unknown(self, name: str) -> UnknownSubscriber:
        return UnknownSubscriber.named(name, (subscriber.name for subscriber in self.all()))

    def describe(self, name: str) -> dict[str, Any]:
        return self.shown(self.get(name))

    def shown(self, subscriber: Subscriber, *, reveal_secret: bool = False) -> dict[str, Any]:
        """A subscriber as the API and CLI show it, with how its latest delivery attempt went: a refusal by
        the address policy (``ssrf_blocked``) is visible here, not only in the log; and, if it asks for the
        CloudEvents handshake, its receiver's verdict (None for one that does not: nothing to read)."""
        last = self._store.last_attempt(subscriber.id)
        verdict = None
        if subscriber.handshake:
            verdict = handshake_verdict(self._store.last_handshake(subscriber.id), subscriber.url)
        return {
            **subscriber.public(reveal_secret=reveal_secret),
            "handshake_verdict": verdict,
            "last_outcome": last["outcome"] if last else None,
            "last_error": last["error"] if last else None,
            "last_attempt_at": last["started_at"] if last else None,
        }

    def secrets(self, name: str) -> dict[str, Any]:
        """What NAME's events are signed with now, for an operator verifying signatures (never listed or logged)."""
        subscriber = self.get(name)
        current, *previous = subscriber.signing_secrets(self._clock())
        expires = subscriber.previous_secret_expires_at
        return {
            "name": name,
            "secret": current,
            "previous_secret": previous[0] if previous else None,
            "previous_secret_expires_at": expires.isoformat() if previous and expires else None,
        }

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
        store_response: bool = False,
        kind: Kind = Kind.WEBHOOK,
        rate: Rate | None = None,
        handshake: bool = False,
        content_mode: ContentMode = ContentMode.STRUCTURED,
        template: str | None = None,
    ) -> Subscriber:
        """Create a subscriber. The returned value carries the secret: show it once, then only masked.

        ``types`` None means every event type.
        """
        vet_destination(self._policy, url, kind)
        try:
            spec = SubscriberSpec(
                name=name,
                url=url,
                secret=_secret(kind, secret),
                filter=build_filter(types, filters),
                max_in_flight=max_in_flight,
                timeout=timeout,
                retry_schedule=None if retry_schedule is None else check_schedule(retry_schedule),
                source=source,
                store_response=store_response,
                kind=kind,
                rate=rate,
                handshake=handshake,
                content_mode=content_mode,
                template=template,
            )
            if template is not None:
                check_template(template)
        except (ValueError, TypeError) as exc:
            raise BadSubscriber(str(exc)) from None
        try:
            subscriber = self._store.add_subscriber(spec, self._clock())
        except StoreConflict:
            raise SubscriberExists(f"a subscriber named {name!r} already exists") from None
        self._on_change()
        return subscriber

    def update(self, name: str, changes: Mapping[str, Any]) -> Subscriber:
        """Change any option but the name and the secret (rotate that); a kind only with a URL of its own.

        Another kind gets the secret `add` gives it (a new Standard Webhooks secret for a webhook or broker; ''
        for a robot, a Feishu or DingTalk one's own by rotation after), and the previous secret's grace ends: the
        old kind's secret never signs the new kind's messages. The secrets endpoint and command show it.
        """
        current = self.get(name)
        columns = SubscriberChanges()
        try:
            unknown = set(changes) - (set(SubscriberChanges.__annotations__) - {"secret"})
            if unknown:
                raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
            kind = changes.get("kind", current.kind)
            url = str(changes.get("url", current.url))
            if "url" in changes or kind is not current.kind:
                vet_destination(self._policy, url, kind)
                columns["url"], columns["kind"] = url, kind
            if kind is not current.kind:
                columns["secret"] = _secret(kind, None)
            if "types" in changes or "filters" in changes:
                built = build_filter(
                    changes.get("types", current.filter.types), changes.get("filters", current.filter.match)
                )
                columns["types"], columns["filters"] = built.types, built.match
            for key in SIMPLE_CHANGES:
                if key in changes:
                    columns[key] = changes[key]  # type: ignore[literal-required]
            check_limits(
                columns.get("max_in_flight", current.max_in_flight),
                columns.get("timeout", current.timeout),
                columns.get("retry_schedule", current.retry_schedule),
            )
            check_scheme(kind, url.partition(":")[0].lower())
            check_kind_options(
                kind,
                handshake=columns.get("handshake", current.handshake),
                content_mode=columns.get("content_mode", current.content_mode),
                template=columns.get("template", current.template),
            )
            if (template := columns.get("template")) is not None:
                check_template(template)
            if (schedule := columns.get("retry_schedule")) is not None:
                columns["retry_schedule"] = check_schedule(schedule)
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
            raise self._unknown(name)
        self._on_change()
        return subscriber

    def remove(self, name: str) -> int:
        """Delete a subscriber; returns how many unfinished deliveries were cancelled."""
        cancelled = self._store.remove_subscriber(name, self._clock())
        if cancelled is None:
            raise self._unknown(name)
        self._on_change()
        return cancelled

    def rotate_secret(self, name: str, secret: str | None = None) -> Subscriber:
        """New signing secret; the previous one keeps signing during the grace period.

        As `add` takes one for the kind: a webhook's or broker's is a Standard Webhooks secret (made when none is
        given); a Feishu or DingTalk robot's is the one its platform shows (given, never made); other robots sign
        nothing, so there is nothing to rotate.
        """
        kind = self.get(name).kind
        try:
            if kind.robot and not secret:
                if kind in SIGNING_ROBOTS:
                    raise ValueError(f"a {kind} robot signs with the secret its platform shows: give that secret")
                raise ValueError(f"a {kind} robot does not sign its messages: it has no secret to rotate")
            new = _secret(kind, secret)
        except ValueError as exc:
            raise BadSubscriber(str(exc)) from None
        now = self._clock()
        subscriber = self._store.rotate_secret(name, new, now + self._secret_grace, now)
        if subscriber is None:
            raise self._unknown(name)
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

    def retry_delivery(self, delivery_id: int) -> DeliveryWithAttempts:
        """Queue one delivery again now (delivered, dead or waiting for a retry)."""
        if self._store.get_delivery(delivery_id) is None:
            raise UnknownDelivery(f"no delivery has id {delivery_id}")
        if not self._store.requeue([delivery_id], self._clock()):
            raise BadSubscriber(
                f"delivery {delivery_id} is in flight, cancelled, or held for COS to confirm its job"
                " (an unconfirmed one goes out when its callback is released)"
            )
        self._on_change()
        delivery = self._store.get_delivery(delivery_id)
        assert delivery is not None
        return delivery

    def retry_delivery_of(self, name: str, event_id: str) -> DeliveryWithAttempts:
        """`retry_delivery` of the delivery of ``event_id`` to subscriber ``name``, with a row or not (one the event
        log implies is written as a row first)."""
        delivery_id = self._store.materialise(self.get(name).id, event_id, self._clock())
        if delivery_id is None:
            raise UnknownDelivery(f"event {event_id} is not owed to subscriber {name}")
        return self.retry_delivery(delivery_id)

    def delivery_of(self, name: str, event_id: str) -> DeliveryWithAttempts:
        """The delivery of ``event_id`` to subscriber ``name`` with its attempts, with a row or not."""
        found = self._store.delivery_of(self.get(name).id, event_id)
        if found is None:
            raise UnknownDelivery(f"event {event_id} is not owed to subscriber {name}")
        return found

    def decide_unconfirmed(self, callback_id: int, decision: str) -> dict[str, Any]:
        """An admin's ``release`` (the events go out after all) or ``discard`` (their deliveries cancelled) of the
        jobs COS did not confirm in callback ``callback_id``."""
        changed = self._store.decide_unconfirmed(callback_id, decision, self._clock())
        if changed is None:
            raise NotFound(f"callback {callback_id} has no job COS did not confirm (nothing to {decision})")
        if decision == "release":
            self._on_change()
        return {"callback_id": callback_id, "decision": decision, "deliveries": changed}


def _secret(kind: Kind, secret: str | None) -> str:
    """What a subscriber signs with: a Standard Webhooks secret (given, or made) for webhooks and brokers; a
    Feishu or DingTalk robot's own signing secret, or none (''); nothing for robots that do not sign."""
    if kind.robot:
        if secret and kind not in SIGNING_ROBOTS:
            raise ValueError(f"a {kind} robot does not sign its messages: leave secret out")
        return secret or ""
    if secret is not None:
        secret_key(secret)
    return secret or generate_secret()
