"""Where a claimed delivery goes: one `Destination` per subscriber kind, each turning a claim into one `Attempt`.

A webhook is the CloudEvent POSTed with Standard Webhooks signatures (structured, or binary with ``ce-*``
headers); the chat robots and the brokers are destinations of their own kinds. The worker neither knows nor
cares which: it hands each claim to `Destinations.send` and records the attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

import orjson

from relay.deliver.client import Sender
from relay.deliver.handshake import Handshakes
from relay.deliver.robots import robots
from relay.deliver.signing import Signer
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import Attempt, Claim, Outcome
from relay.domain.destinations import ContentMode, Kind

#: Signers kept for reuse (one per subscriber and secret set); beyond this the cache starts over.
SIGNER_CACHE = 1024
#: The CloudEvents attributes binary mode carries as ``ce-*`` headers (the rest of the event is its data).
_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time")


class Destination(Protocol):
    """Sends one claimed delivery; the receiver's failures are outcomes, never exceptions."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, claim: Claim, at: datetime) -> Attempt: ...


class Signers:
    """Standard Webhooks signers keyed once per secret set: deriving HMAC keys per attempt costs as much as
    signing."""

    def __init__(self) -> None:
        self._signers: dict[tuple[str, ...], Signer] = {}

    def __call__(self, secrets: tuple[str, ...]) -> Signer:
        signer = self._signers.get(secrets)
        if signer is None:
            if len(self._signers) >= SIGNER_CACHE:
                self._signers.clear()
            signer = self._signers[secrets] = Signer(secrets)
        return signer


def binary(body: bytes) -> tuple[bytes, dict[str, str]]:
    """A structured CloudEvent as binary mode sends it: its data as the body, its attributes as ``ce-*``
    headers (CloudEvents HTTP binding, 3.1)."""
    event = orjson.loads(body)
    headers = {f"ce-{name}": str(event[name]) for name in _ATTRIBUTES if event.get(name) is not None}
    headers["Content-Type"] = event.get("datacontenttype", "application/json")
    return orjson.dumps(event.get("data")), headers


class Webhook:
    """The CloudEvent POSTed to the subscriber's URL, signed the Standard Webhooks way."""

    def __init__(self, sender: Sender, handshakes: Handshakes | None = None) -> None:
        self._sender = sender
        self._signers = Signers()
        #: None: no handshake can be made (a subscriber that asks for one is refused, never sent unasked).
        self._handshakes = handshakes

    async def start(self) -> None:
        await self._sender.start()

    async def close(self) -> None:
        await self._sender.close()

    async def send(self, claim: Claim, at: datetime) -> Attempt:
        body, headers = claim.body, dict[str, str]()
        if claim.route.handshake:
            if self._handshakes is None:
                return Attempt(Outcome.HANDSHAKE_REFUSED, None, 0.0, "this worker makes no handshakes", b"", None)
            refused = await self._handshakes.admit(claim, at)
            if refused is not None:
                return refused
            headers |= self._handshakes.headers
        if claim.route.content_mode is ContentMode.BINARY:
            body, headers = binary(body)
        # Signed over the bytes sent: in binary mode, the data.
        headers |= self._signers(claim.secrets).headers(claim.event_id, int(at.timestamp()), body)
        return await self._sender.send(claim.url, body, headers, timeout=claim.timeout)


class Destinations:
    """Every kind's destination, started and closed together; a claim goes to its subscriber's kind."""

    def __init__(self, by_kind: Mapping[Kind, Destination]) -> None:
        self._by_kind = dict(by_kind)

    @classmethod
    def of(
        cls,
        sender: Sender,
        handshakes: Handshakes | None = None,
        public_url: str | None = None,
        *,
        policy: AddressPolicy | None = None,
    ) -> Destinations:
        """Every kind this release sends; robots' messages link to ``public_url``'s console (RELAY_PUBLIC_URL); the
        brokers connect only to addresses ``policy`` allows (by default, only globally routable ones)."""
        from relay.deliver.brokers import brokers  # here: the brokers build on this module's signing

        return cls(
            {
                Kind.WEBHOOK: Webhook(sender, handshakes),
                **robots(sender, public_url),
                **brokers(policy or AddressPolicy()),
            }
        )

    async def start(self) -> None:
        for destination in self._by_kind.values():
            await destination.start()

    async def close(self) -> None:
        for destination in self._by_kind.values():
            await destination.close()

    async def send(self, claim: Claim, at: datetime) -> Attempt:
        destination = self._by_kind.get(claim.route.kind)
        if destination is None:  # a subscriber of a kind this release cannot send: retried, and said why
            return Attempt(
                Outcome.CONNECTION_ERROR, None, 0.0, f"no destination for kind {claim.route.kind}", b"", None
            )
        return await destination.send(claim, at)
