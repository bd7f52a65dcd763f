"""Where a claimed delivery goes: a `Destination` per subscriber kind turns a claim into one `Attempt`; the
webhook is the default one: the CloudEvent POSTed with Standard Webhooks signatures (structured, or binary with
``ce-*`` headers). The chat robots (`robots/`) and the brokers (`brokers/`) are destinations of their own kinds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from relay.deliver.client import Sender
from relay.deliver.handshake import Handshakes
from relay.deliver.signing import Signers
from relay.domain.delivery import Attempt, Claim, Outcome
from relay.domain.destinations import ContentMode
from relay.domain.events import binary


class Destination(Protocol):
    """Sends one claimed delivery; the receiver's failures are outcomes, never exceptions."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, claim: Claim, at: datetime) -> Attempt: ...


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
