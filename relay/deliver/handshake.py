"""The CloudEvents abuse-protection handshake (HTTP Webhook spec, section 4), for subscribers that ask for it.

Before the first delivery, and again once a grant expires or the URL changed, the receiver is asked with an
``OPTIONS`` request carrying ``WebHook-Request-Origin`` (and ``WebHook-Request-Rate`` when the subscriber has a
rate). It grants by answering ``WebHook-Allowed-Origin`` with our origin or ``*``; ``WebHook-Allowed-Rate`` (per
minute) then limits the subscriber across replicas, through the claim's pacing. Status codes cannot be relied
on (the spec says so): only the header grants. Verdicts live in the database, so replicas share them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

from relay.deliver.client import Sender
from relay.domain.delivery import Attempt, Claim, Outcome
from relay.domain.destinations import Handshake, Rate
from relay.store import Store

ORIGIN_HEADER = "WebHook-Request-Origin"


def allowed_rate(value: str | None) -> Rate | None:
    """``WebHook-Allowed-Rate``: requests per minute, or ``*`` (any); None for no limit. Junk limits to the
    slowest rate rather than none: the receiver meant to say something."""
    if value is None or value.strip() == "*":
        return None
    written = value.strip()
    count = int(written) if written.isascii() and written.isdigit() else 1
    return Rate(max(1, min(count, 600_000)), 60)


class Handshakes:
    """Asks receivers, remembers their answers, and says whether a delivery may go."""

    def __init__(self, store: Store, sender: Sender, origin: str, valid_for: timedelta) -> None:
        self._store = store
        self._sender = sender
        self._origin = origin
        self._valid_for = valid_for
        #: Grants this process saw, so a delivery under a grant costs no read (bounded by the subscribers).
        self._grants: dict[int, Handshake] = {}

    @property
    def headers(self) -> Mapping[str, str]:
        """What every delivery after a grant carries (the spec's MUST)."""
        return {ORIGIN_HEADER: self._origin}

    async def admit(self, claim: Claim, at: datetime) -> Attempt | None:
        """None when the receiver's grant holds (asked now if needed); else the attempt that failed, which the
        worker records and retries like any other."""
        known = self._grants.get(claim.subscriber_id)
        if known is None or not known.holds(claim.url, at):
            known = await self._store.handshake_of(claim.subscriber_id)  # another replica may have asked
        if known is not None and known.holds(claim.url, at):
            self._grants[claim.subscriber_id] = known
            return None
        asked = {ORIGIN_HEADER: self._origin}
        if claim.route.rate is not None:
            asked["WebHook-Request-Rate"] = str(math.ceil(claim.route.rate.per_second * 60))
        attempt, answer = await self._sender.exchange("OPTIONS", claim.url, b"", asked, timeout=claim.timeout)
        if attempt.status is None:  # never answered (timeout, refused connection, the address policy)
            return attempt
        allowed = answer.get("WebHook-Allowed-Origin", "").strip()
        granted = 200 <= attempt.status < 300 and allowed in (self._origin, "*")
        rate = allowed_rate(answer.get("WebHook-Allowed-Rate")) if granted else None
        if granted:
            detail = f"granted to {allowed}" + (f", at most {rate}" if rate else "")
        elif not allowed:
            detail = f"refused: answered {attempt.status} without WebHook-Allowed-Origin"
        else:
            detail = f"refused: answered {attempt.status}, WebHook-Allowed-Origin is not {self._origin}"
        expires = at + self._valid_for if granted else at
        verdict = Handshake(claim.subscriber_id, claim.url, granted, rate, detail, at, expires)
        await self._store.record_handshake(verdict)
        if granted:
            self._grants[claim.subscriber_id] = verdict
            return None
        return Attempt(Outcome.HANDSHAKE_REFUSED, attempt.status, attempt.duration, detail, b"", None)
