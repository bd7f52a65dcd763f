"""Standard Webhooks signing, checked against the official `standardwebhooks` verifier."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.deliver.signing import Signer, generate_secret, secret_key
from relay.domain.subscribers import mask_secret

# The reference library's own test vector (standard-webhooks libraries/python/tests, test_sign_function).
REF_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REF_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REF_TIMESTAMP = 1614265330
REF_PAYLOAD = b'{"test": 2432232314}'
REF_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODY = b'{"specversion":"1.0","id":"evt_1","source":"cos","type":"cos.job.completed","data":{"JobId":"j1"}}'
SIGNATURE_ENTRY = re.compile(r"v1,[A-Za-z0-9+/]{43}=")


def later(headers: dict[str, str]) -> str:
    return str(int(headers["webhook-timestamp"]) + 1)


Tamper = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]


def now() -> int:
    return int(time.time())


def test_reference_vector_of_the_standard_webhooks_library_is_reproduced() -> None:
    headers = Signer([REF_SECRET]).headers(REF_MSG_ID, REF_TIMESTAMP, REF_PAYLOAD)
    assert headers == {
        "webhook-id": REF_MSG_ID,
        "webhook-timestamp": str(REF_TIMESTAMP),
        "webhook-signature": REF_SIGNATURE,
    }


def test_official_verifier_accepts_a_signed_delivery_and_returns_its_json() -> None:
    secret = generate_secret()
    headers = Signer([secret]).headers("msg_1", now(), BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_signed_content_is_id_dot_timestamp_dot_body() -> None:
    secret = generate_secret()
    ts = now()
    headers = Signer([secret]).headers("msg_2", ts, BODY)
    library = Webhook(secret).sign("msg_2", datetime.fromtimestamp(ts, tz=UTC), BODY.decode())
    assert headers["webhook-signature"] == library


def test_during_rotation_both_the_new_and_the_old_secret_verify() -> None:
    new, old = generate_secret(), generate_secret()
    headers = Signer([new, old]).headers("msg_3", now(), BODY)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(SIGNATURE_ENTRY.fullmatch(entry) for entry in entries)
    Webhook(new).verify(BODY, headers)
    Webhook(old).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_current_secret_signs_first() -> None:
    new, old = generate_secret(), generate_secret()
    ts = now()
    both = Signer([new, old]).headers("msg_4", ts, BODY)["webhook-signature"].split(" ")
    assert both[0] == Signer([new]).headers("msg_4", ts, BODY)["webhook-signature"]
    assert both[1] == Signer([old]).headers("msg_4", ts, BODY)["webhook-signature"]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda body, headers: (body.replace(b"j1", b"j2"), headers), id="body"),
        pytest.param(lambda body, headers: (body + b" ", headers), id="body-trailing-space"),
        pytest.param(lambda body, headers: (body, {**headers, "webhook-id": "msg_other"}), id="id"),
        pytest.param(
            lambda body, headers: (
                body,
                {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)},
            ),
            id="timestamp",
        ),
    ],
)
def test_tampering_with_body_id_or_timestamp_fails_verification(tamper: Tamper) -> None:
    secret = generate_secret()
    headers = Signer([secret]).headers("msg_5", now(), BODY)
    body, forged = tamper(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, forged)


def test_generated_secrets_are_whsec_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert secret_key(first) == base64.b64decode(first.removeprefix("whsec_"))
    assert first != second


def test_secret_key_accepts_the_prefix_or_not_and_unpadded_base64() -> None:
    raw = bytes(range(20))
    encoded = base64.b64encode(raw).decode()
    assert encoded.endswith("=")
    assert secret_key("whsec_" + encoded) == raw
    assert secret_key(encoded) == raw
    assert secret_key(encoded.rstrip("=")) == raw


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("whsec_", "bytes"),
        ("", "bytes"),
        ("whsec_!!!!notbase64!!!!", "base64"),
        ("whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 12).decode(), "base64"),  # url-safe alphabet
        ("whsec_" + base64.b64encode(b"k" * 15).decode(), "bytes"),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "bytes"),
        ("whsec_ " + base64.b64encode(b"k" * 24).decode(), "base64"),
    ],
)
def test_secret_key_rejects_malformed_or_wrongly_sized_secrets_without_echoing_them(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        secret_key(secret)
    body = secret.removeprefix("whsec_")
    if body:
        assert body not in str(caught.value)


@pytest.mark.parametrize("size", [16, 24, 32, 64])
def test_secret_key_accepts_sizes_from_16_to_64_bytes(size: int) -> None:
    assert len(secret_key(base64.b64encode(b"s" * size).decode())) == size


def test_mask_shows_the_prefix_and_four_characters_only() -> None:
    secret = generate_secret()
    masked = mask_secret(secret)
    assert masked == secret[: len("whsec_") + 4] + "…"
    assert mask_secret(REF_SECRET.removeprefix("whsec_")) == "MfKQ…"


@pytest.mark.parametrize("secret", ["whsec_short", "abc", ""])
def test_mask_reveals_nothing_of_a_short_secret(secret: str) -> None:
    assert mask_secret(secret).removeprefix("whsec_") == "…"


def test_signer_refuses_a_bare_string_which_would_sign_with_each_character() -> None:
    with pytest.raises(TypeError, match="sequence"):
        Signer(REF_SECRET)


def test_signer_needs_a_secret_and_validates_each_one() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Signer([])
    with pytest.raises(ValueError, match="base64"):
        Signer([generate_secret(), "whsec_***"])


def test_signer_repr_does_not_leak_secrets() -> None:
    secret = generate_secret()
    assert secret.removeprefix("whsec_")[:8] not in repr(Signer([secret]))


@pytest.mark.parametrize("msg_id", ["", "msg.1", "msg 1", "msg\n1"])
def test_ids_that_would_make_the_signed_content_ambiguous_are_refused(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        Signer([generate_secret()]).headers(msg_id, now(), BODY)


def test_signing_is_deterministic_and_reusable_across_messages() -> None:
    signer = Signer([REF_SECRET])
    first = signer.headers(REF_MSG_ID, REF_TIMESTAMP, REF_PAYLOAD)
    signer.headers("msg_other", REF_TIMESTAMP, b"{}")
    assert signer.headers(REF_MSG_ID, REF_TIMESTAMP, REF_PAYLOAD) == first


@given(
    msg_id=st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=40),
    data=st.dictionaries(st.text(max_size=10), st.text(max_size=30) | st.integers(), max_size=5),
)
def test_any_json_body_and_id_verify_with_the_official_library(msg_id: str, data: dict[str, object]) -> None:
    body = json.dumps(data, ensure_ascii=False).encode()
    headers = Signer([REF_SECRET, generate_secret()]).headers(msg_id, now(), body)
    assert Webhook(REF_SECRET).verify(body, headers) == data
