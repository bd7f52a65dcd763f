"""The destinations by subscriber kind, started and closed together: the worker hands each claim to
`Destinations.send` and records the attempt, whichever kind it was."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from relay.deliver.brokers import brokers
from relay.deliver.client import Sender
from relay.deliver.destination import Destination, Webhook
from relay.deliver.handshake import Handshakes
from relay.deliver.robots import robots
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import Attempt, Claim
from relay.domain.destinations import Kind


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
        return await self._by_kind[claim.route.kind].send(claim, at)
