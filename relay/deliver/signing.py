"""Standard Webhooks v1 signing (symmetric HMAC-SHA256), with several secrets during a rotation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from secrets import token_bytes

_PREFIX = "whsec_"
# The spec asks for 24-64 random bytes; 16 is accepted so secrets minted by older tools still verify.
_MIN_KEY, _MAX_KEY = 16, 64
#: What a webhook id may not contain: a dot would make the signed content ambiguous, whitespace the header.
_BAD_ID = re.compile(r"[.\s]")


def generate_secret() -> str:
    """A new ``whsec_`` secret: 32 random bytes, base64."""
    return _PREFIX + base64.b64encode(token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The key bytes of ``whsec_<base64>`` (prefix optional); ValueError if malformed or the wrong size.

    Error messages never include the secret.
    """
    encoded = secret.removeprefix(_PREFIX)
    # Unpadded base64 is accepted, as the reference library does.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not valid base64") from None
    if not _MIN_KEY <= len(key) <= _MAX_KEY:
        raise ValueError(f"webhook secret must decode to {_MIN_KEY}-{_MAX_KEY} bytes, not {len(key)}")
    return key


class Signer:
    """Signs deliveries with the current secret and any previous ones still in their grace period."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if isinstance(secrets, str):
            # A bare string is a Sequence[str] too: it would sign with each character.
            raise TypeError("Signer takes a sequence of secrets, not a single string")
        if not secrets:
            raise ValueError("Signer needs at least one secret")
        # Keyed HMAC states, copied per message: the key schedule is computed once, not per delivery.
        self._macs = tuple(hmac.new(secret_key(secret), digestmod=hashlib.sha256) for secret in secrets)

    def __repr__(self) -> str:
        return f"Signer(<{len(self._macs)} secret(s)>)"

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers for ``body``."""
        if not msg_id or _BAD_ID.search(msg_id):
            # The signed content is "id.timestamp.body": a dot in the id would make it ambiguous.
            raise ValueError("webhook id must be non-empty, without dots or whitespace")
        content = f"{msg_id}.{timestamp}.".encode() + body
        signatures = []
        for prototype in self._macs:
            mac = prototype.copy()
            mac.update(content)
            signatures.append("v1," + base64.b64encode(mac.digest()).decode("ascii"))
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
        }


#: Signers kept for reuse (one per subscriber and secret set); beyond this the cache starts over.
SIGNER_CACHE = 1024


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
