"""relay.cos.signing gives the official SDK's signature (cos-python-sdk-v5's ``CosS3Auth``) for the same
requests: the job and queue API calls cos-relay makes, with parameters and headers that need encoding."""

from __future__ import annotations

import types
from urllib.parse import urlencode

import httpx
import pytest
from qcloud_cos import CosConfig, cos_auth

from relay.cos.signing import CosAuth, Credentials, authorization

NOW = 1_765_000_000
CREDENTIALS = Credentials("AKIDexampleSecretId0000000000000000", "exampleSecretKey000000000000000000")
HOST = "examplebucket-1250000000.ci.ap-chengdu.myqcloud.com"

REQUESTS = [
    ("GET", "/jobs", {"tag": "Transcode", "orderByTime": "Desc", "states": "All", "size": "50", "nextToken": ""}),
    (
        "GET",
        "/jobs",
        {
            "tag": "Snapshot",
            "queueId": "p2242ab62c7c94486915508540933a2c6",
            "startCreationTime": "2026-12-05T23:00:00+0800",
            "endCreationTime": "2026-12-06T23:00:00+0800",
            "nextToken": "a b/c+d=e&f",
        },
    ),
    ("GET", "/jobs/j3feb7ccc28fc11eea5a5ab6f3b7d0a8c,j4feb7ccc28fc11eea5a5ab6f3b7d0a8c", {}),
    ("GET", "/asr_jobs", {"tag": "SpeechRecognition", "states": "Success"}),
    ("GET", "/workflowexecution/i8de8d7a6c85c11eea5a5ab6f3b7d0a8c", {}),
    ("PUT", "/queue/p2242ab62c7c94486915508540933a2c6", {}),
    ("GET", "/queue", {"queueIds": "p1,p2", "state": "All", "pageNumber": "1", "pageSize": "100"}),
]


def sdk_authorization(
    monkeypatch: pytest.MonkeyPatch, method: str, path: str, params: dict[str, str], headers: dict[str, str]
) -> str:
    monkeypatch.setattr(cos_auth, "time", types.SimpleNamespace(time=lambda: NOW))
    config = CosConfig(Region="ap-chengdu", SecretId=CREDENTIALS.secret_id, SecretKey=CREDENTIALS.secret_key)
    request = types.SimpleNamespace(method=method, url=f"https://{HOST}{path}?{urlencode(params)}", headers=headers)
    cos_auth.CosS3Auth(config, key=path, params=params, expire=600)(request)
    return str(request.headers["Authorization"])


@pytest.mark.parametrize(("method", "path", "params"), REQUESTS)
def test_the_signature_is_the_sdks_for_the_same_request(
    monkeypatch: pytest.MonkeyPatch, method: str, path: str, params: dict[str, str]
) -> None:
    headers = {"Host": HOST, "Content-Type": "application/xml", "x-cos-meta-Note": "é ü", "Accept": "*/*"}
    expected = sdk_authorization(monkeypatch, method, path, params, dict(headers))
    signed = {name: value for name, value in headers.items() if name != "Accept"}  # the SDK leaves Accept out
    assert authorization(CREDENTIALS, method, path, params, signed, NOW) == expected


def test_an_httpx_request_is_signed_as_the_sdk_signs_what_it_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    method, path, params = REQUESTS[1]
    request = httpx.Request(method, f"https://{HOST}{path}", params=params)
    signed = CosAuth(CREDENTIALS, clock=lambda: NOW)(request)
    # httpx sends Host and no other signed header on a GET without a body.
    assert signed.headers["Authorization"] == sdk_authorization(monkeypatch, method, path, params, {"Host": HOST})


def test_the_secret_key_is_in_no_repr() -> None:
    assert CREDENTIALS.secret_key not in repr(CREDENTIALS)
