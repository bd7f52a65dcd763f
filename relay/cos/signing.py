"""COS's v5 request signature: the ``Authorization`` header COS checks on every job and queue API call.

Written here over httpx rather than taken from cos-python-sdk-v5: the SDK signs `requests` requests,
synchronously, and brings requests, six, crcmod and pycryptodome along; the signature itself is two HMAC-SHA1s
over a canonical request. tests/cos/test_signing.py proves that it gives the SDK's ``CosS3Auth`` signature
for the same requests (the SDK is a test dependency only).

The canonical request: the method in lower case, the path, then the signed query parameters and headers,
each as ``key=value`` pairs, keys lower-cased, both URL-encoded with only ``-_.~`` left as they are, sorted
and joined by ``&``. Signed: every query parameter, ``host``, and the headers `signed_header` names.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    import httpx

#: Headers COS signs besides ``x-cos-*`` and ``x-ci-*`` (the SDK's ``filter_headers``).
SIGNED_HEADERS = frozenset(
    {
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-type",
        "content-md5",
        "content-length",
        "expect",
        "expires",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-unmodified-since",
        "origin",
        "range",
        "transfer-encoding",
        "pic-operations",
    }
)

#: A signature is valid from a minute before it was made (clock skew, as the SDK allows) for this long.
LIFETIME = 600


@dataclass(frozen=True)
class Credentials:
    """A source's API key pair. The key never appears in a repr, so never in a log line or a traceback."""

    secret_id: str
    secret_key: str = field(repr=False)


def signed_header(name: str) -> bool:
    name = name.lower()
    return name in SIGNED_HEADERS or name.startswith(("x-cos-", "x-ci-"))


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical(pairs: Mapping[str, str]) -> tuple[str, str]:
    """The ``;``-joined list of keys and the ``&``-joined ``key=value`` string COS signs for ``pairs``."""
    encoded = sorted((_encode(key).lower(), _encode(value)) for key, value in pairs.items())
    return ";".join(key for key, _ in encoded), "&".join(f"{key}={value}" for key, value in encoded)


def signature(
    secret_key: str, method: str, path: str, params: Mapping[str, str], headers: Mapping[str, str], key_time: str
) -> str:
    """The ``q-signature`` of a request: ``key_time`` is ``"<start>;<end>"`` in Unix seconds."""
    _, query = canonical(params)
    _, header_string = canonical(headers)
    request = f"{method.lower()}\n{path}\n{query}\n{header_string}\n"
    to_sign = f"sha1\n{key_time}\n{hashlib.sha1(request.encode()).hexdigest()}\n"  # noqa: S324 - COS's v5 algorithm
    sign_key = hmac.new(secret_key.encode(), key_time.encode(), hashlib.sha1).hexdigest()
    return hmac.new(sign_key.encode(), to_sign.encode(), hashlib.sha1).hexdigest()


def authorization(
    credentials: Credentials,
    method: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    now: float,
    lifetime: int = LIFETIME,
) -> str:
    """The ``Authorization`` header for a request made at ``now``, valid for ``lifetime`` seconds."""
    start = int(now)
    key_time = f"{start - 60};{start + lifetime}"
    header_list, _ = canonical(headers)
    param_list, _ = canonical(params)
    signed = signature(credentials.secret_key, method, path, params, headers, key_time)
    return (
        f"q-sign-algorithm=sha1&q-ak={credentials.secret_id}&q-sign-time={key_time}&q-key-time={key_time}"
        f"&q-header-list={header_list}&q-url-param-list={param_list}&q-signature={signed}"
    )


class CosAuth:
    """Signs each request of an httpx client: every query parameter, the host and the signed headers.

    A callable, which httpx takes as an auth, rather than an `httpx.Auth`: this module then needs no httpx,
    and a gateway with no COS source never imports it (`CosSource` holds `Credentials`)."""

    def __init__(self, credentials: Credentials, clock: Callable[[], float]) -> None:
        self._credentials = credentials
        self._clock = clock

    def __call__(self, request: httpx.Request) -> httpx.Request:
        headers = {name: value for name, value in request.headers.items() if signed_header(name)}
        request.headers["Authorization"] = authorization(
            self._credentials,
            request.method,
            request.url.path,
            dict(request.url.params),
            headers,
            self._clock(),
        )
        return request
