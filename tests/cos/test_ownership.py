"""With COS sources configured, a callback is ours only if its buckets are (issue 23, item 6): another bucket's
job or run is refused with 422, quarantined with the reason and counted; a job that names no bucket is let
through (a source's confirm checks those)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from relay.app.factory import create_app
from relay.cos.client import CosApi, CosUnavailable, Page
from relay.cos.sources import CosSource
from relay.settings.table import Settings
from tests.conftest import ADMIN_TOKEN, DATA, TRANSCODE, callback_schema, callback_url
from tests.cos.test_client import CREDENTIALS
from tests.live import ThreadServer

OURS = "examplebucket-1250000000"  # the samples' bucket
DOC = (DATA / "samples" / "doc_process_success.xml").read_bytes()
WORKFLOW = (DATA / "samples" / "workflow_finish_success.xml").read_bytes()


class Unreachable(CosApi):
    """COS is not asked in these tests: every list fails at once, quietly."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", CREDENTIALS, clock=lambda: 0.0)

    async def _page(self, path: str, params: dict[str, str]) -> Page:
        raise CosUnavailable("unreachable", "not asked in this test")


def gateway_for(settings: Settings, bucket: str) -> ThreadServer:
    source = CosSource("media", bucket, "ap-guangzhou", CREDENTIALS, "http://127.0.0.1:9", tags=("Transcode",))
    app = create_app(settings, schema=callback_schema(), cos_sources=[source], cos_api=lambda source: Unreachable())
    return ThreadServer(app).start()


@pytest.fixture
def theirs(settings: Settings) -> Iterator[httpx.Client]:
    server = gateway_for(settings, "someoneelse-1250000001")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


def test_a_callback_for_a_bucket_of_no_source_is_refused_quarantined_and_counted(theirs: httpx.Client) -> None:
    refused = theirs.post(callback_url(), content=TRANSCODE)
    assert refused.status_code == 422
    body = refused.json()
    assert body["detail"] == f"bucket '{OURS}' belongs to no configured COS source"
    assert (body["path"], body["rule"]) == ("/Response/JobsDetail[1]/Input/BucketId", "ownership")
    assert theirs.post(callback_url(), content=WORKFLOW).status_code == 422
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    quarantined = theirs.get("/api/callbacks", params={"outcome": "invalid"}, headers=admin).json()["items"]
    assert len(quarantined) == 2
    assert 'relay_callbacks_received_total{outcome="invalid"} 2.0' in theirs.get("/metrics").text
    assert theirs.post(callback_url(), content=DOC).json() == {"status": "accepted"}  # names no bucket


def test_a_callback_for_a_sources_bucket_is_accepted(settings: Settings) -> None:
    server = gateway_for(settings, OURS)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post(callback_url(), content=TRANSCODE).json() == {"status": "accepted"}
            assert client.post(callback_url(), content=WORKFLOW).json() == {"status": "accepted"}
    finally:
        server.stop()
