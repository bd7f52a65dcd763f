"""Secrets at rest: the tokens, the console's session key and every subscriber's signing secrets, sealed
(AES-256-GCM) under a key kept outside the database, so a copied file, a backup or a pg_dump hands out none.

Both backends seal on the way in and open on the way out through one `Sealer`, so everything above the store
sees secrets in clear. A sealed value is ``sealed:v1:<key id>:<base64url(nonce, ciphertext and tag)>``; any
other value is in clear (written before a key was configured, or without one). The key file holds one key a
line: the first seals, every one opens, so a rotation puts the new key first and keeps the old one until
`reseal` (run at every open) has moved each value over.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import operator
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.domain.delivery import Claim, Recorded
from relay.domain.subscribers import Subscriber, SubscriberSpec
from relay.store.records import StoredToken, SubscriberChanges

PREFIX = "sealed:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
#: Bound into every seal: a value sealed by something else under the same key does not open here.
_CONTEXT = b"cos-relay stored secret v1"
#: Opened values remembered (by sealed text): the worker opens a subscriber's secrets at every claim.
_OPENED = 4096
_SETTING = "RELAY_SECRET_KEY_FILE (--secret-key-file)"
_MAKE_ONE = "make one with `cos-relay secrets new-key FILE`"


class WrongSecretKey(Exception):
    """A sealed value no configured key opens, or a key file that holds no key: one line naming the fix."""


def generate_key() -> str:
    """A new key as the key file holds it: 32 random bytes, base64url."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def key_id(key: bytes) -> str:
    """Names a key in sealed values without revealing it."""
    return hashlib.sha256(b"cos-relay key id\0" + key).hexdigest()[:8]


def parse_keys(text: str) -> list[bytes]:
    """The keys of a key file, first one first; ValueError saying what is wrong (never echoing a key)."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.urlsafe_b64decode(line.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError):
            key = b""
        if len(key) != KEY_BYTES:
            raise ValueError(f"line {number} is not a key (base64url of {KEY_BYTES} bytes): {_MAKE_ONE}")
        keys.append(key)
    if not keys:
        raise ValueError(f"it holds no key: {_MAKE_ONE}")
    return keys


def read_keys(path: Path) -> list[bytes]:
    """`parse_keys` of the file at ``path``; ValueError naming it when it cannot be read or holds no key."""
    try:
        return parse_keys(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the secret key file {path}: {error}") from None
    except ValueError as error:
        raise ValueError(f"the secret key file {path}: {error}") from None


class Sealer:
    """Seals with the first key, opens with any; with no key it stores in clear and opens only clear values."""

    def __init__(self, keys: Sequence[bytes] = ()) -> None:
        self._keys = {key_id(key): AESGCM(key) for key in keys}
        self.primary = key_id(keys[0]) if keys else None
        self._open_cached = functools.lru_cache(maxsize=_OPENED)(self._open)

    @classmethod
    def from_file(cls, path: Path | None) -> Sealer:
        """The sealer of the key file at ``path`` (None: no key, clear). ValueError (one line) on a bad file."""
        return cls() if path is None else cls(read_keys(path))

    def seal(self, value: str) -> str:
        if self.primary is None or not value:
            return value
        nonce = os.urandom(NONCE_BYTES)
        box = self._keys[self.primary].encrypt(nonce, value.encode(), _CONTEXT)
        return f"{PREFIX}{self.primary}:{base64.urlsafe_b64encode(nonce + box).decode()}"

    def open(self, value: str) -> str:
        """The clear value; `WrongSecretKey` when it is sealed under a key this sealer lacks, or was altered."""
        return self._open_cached(value) if value.startswith(PREFIX) else value

    def _open(self, value: str) -> str:
        kid, _, packed = value.removeprefix(PREFIX).partition(":")
        key = self._keys.get(kid)
        if key is None:
            have = f"has only key(s) {', '.join(self._keys)}" if self._keys else "is not set"
            raise WrongSecretKey(
                f"the database's secrets are sealed with key {kid}, but {_SETTING} {have}: give it the key file that"
                " holds that key (during a rotation: the new key first, the old one after it)"
            )
        try:
            raw = base64.urlsafe_b64decode(packed.encode("ascii"))
            return key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _CONTEXT).decode()
        except (binascii.Error, UnicodeError, ValueError, InvalidTag):
            raise WrongSecretKey(
                f"a secret sealed with key {kid} does not open: the key file holds a different key under that id,"
                " or the database was altered"
            ) from None

    def reseal(self, value: str) -> str | None:
        """``value`` sealed under the first key, or None when it already is (or stays in clear, with no key).
        `WrongSecretKey` when it does not open: checked for every stored secret at every start."""
        if not value:
            return None
        clear = self.open(value)
        if self.primary is None or value.startswith(f"{PREFIX}{self.primary}:"):
            return None
        return self.seal(clear)

    # -- the store's values, opened or sealed whole

    def spec(self, spec: SubscriberSpec) -> SubscriberSpec:
        return dataclasses.replace(spec, secret=self.seal(spec.secret))

    def changes(self, changes: SubscriberChanges) -> SubscriberChanges:
        if "secret" not in changes:
            return changes
        sealed = changes.copy()
        sealed["secret"] = self.seal(changes["secret"])
        return sealed

    def subscriber(self, subscriber: Subscriber) -> Subscriber:
        previous = subscriber.previous_secret
        return dataclasses.replace(
            subscriber,
            secret=self.open(subscriber.secret),
            previous_secret=None if previous is None else self.open(previous),
        )

    def maybe_subscriber(self, subscriber: Subscriber | None) -> Subscriber | None:
        return None if subscriber is None else self.subscriber(subscriber)

    def claim(self, claim: Claim) -> Claim:
        # The same claim when nothing was sealed: `dataclasses.replace` twice per attempt was 7% of the delivery loop.
        secrets = tuple(map(self.open, claim.secrets))
        return claim if secrets == claim.secrets else dataclasses.replace(claim, secrets=secrets)

    def recorded(self, recorded: Recorded) -> Recorded:
        opened = tuple(map(self.claim, recorded.following))
        same = all(map(operator.is_, opened, recorded.following))
        return recorded if same else dataclasses.replace(recorded, following=opened)

    def token(self, stored: StoredToken) -> StoredToken:
        value, previous = stored.value, stored.previous
        return dataclasses.replace(
            stored,
            value=None if value is None else self.open(value),
            previous=None if previous is None else self.open(previous),
        )
