"""relay.cos.client against the COS stand-in (a real server on loopback that checks signatures the SDK's
way): it pages through NextToken, reads jobs by id, updates a queue, and turns every kind of failure into one
`CosUnavailable` whose message carries no credential."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from relay.cos.client import IDS_PER_READ, CosApi, CosUnavailable
from relay.cos.signing import Credentials
from tests.conftest import job_id
from tests.cos.standin import CosStandIn, Job, Queue

pytestmark = pytest.mark.anyio

CREDENTIALS = Credentials("AKIDstandin000000000000000000000000", "standinSecretKey00000000000000000")
CST = timezone(timedelta(hours=8))
START = datetime(2026, 12, 6, 0, 0, tzinfo=CST)


@pytest.fixture(scope="module")
def standin() -> Iterator[CosStandIn]:
    server = CosStandIn(CREDENTIALS).start()
    yield server
    server.stop()


@pytest.fixture
async def cos(standin: CosStandIn) -> AsyncIterator[CosApi]:
    standin.recover()
    standin.jobs.clear()
    standin.asked.clear()
    api = CosApi(standin.url, CREDENTIALS, clock=time.time, timeout=2)
    yield api
    await api.aclose()


async def listed(api: CosApi, **filters: str) -> list[str]:
    found = []
    async for page in api.list_jobs("media", start=START, end=START + timedelta(days=1), **filters):
        found += [str(element.findtext("JobId")) for element in page.root.iter("JobsDetail")]
    return found


async def test_a_list_follows_next_token_to_its_end_oldest_first(standin: CosStandIn, cos: CosApi) -> None:
    jobs = [Job(job_id(n), START + timedelta(minutes=n)) for n in range(250)]
    standin.add(*reversed(jobs), Job(job_id(999), START - timedelta(hours=1)))  # one before the window
    assert await listed(cos, tag="Transcode") == [job.job_id for job in jobs]
    assert standin.count("/jobs") == 3  # 100 + 100 + 50
    assert all(asked.params["orderByTime"] == "Asc" for asked in standin.asked)


async def test_a_list_keeps_to_its_tag_and_queue(standin: CosStandIn, cos: CosApi) -> None:
    standin.add(
        Job(job_id(1), START, queue_id="p1"),
        Job(job_id(2), START, queue_id="p2"),
        Job(job_id(3), START, tag="Snapshot", queue_id="p1"),
    )
    assert await listed(cos, tag="Transcode", queue="p1") == [job_id(1)]
    assert await listed(cos, tag="Snapshot") == [job_id(3)]


async def test_jobs_read_by_id_name_the_ones_cos_does_not_know(standin: CosStandIn, cos: CosApi) -> None:
    standin.add(Job(job_id(1), START, state="Failed"))
    page = await cos.read_jobs("media", [job_id(1), job_id(2)])
    assert [element.findtext("State") for element in page.root.iter("JobsDetail")] == ["Failed"]
    assert page.root.findtext("NonExistJobIds") == job_id(2)
    with pytest.raises(ValueError, match="1 to 10"):
        await cos.read_jobs("media", [job_id(n) for n in range(IDS_PER_READ + 1)])


async def test_a_queues_callback_is_set_through_the_update_api(standin: CosStandIn, cos: CosApi) -> None:
    standin.queues["p1"] = Queue("p1", "main")
    request = (
        b"<Request><Name>main</Name><State>Active</State><NotifyConfig><State>On</State><Type>Url</Type>"
        b"<Url>https://relay.example/cos/callback?token=t</Url><Event>TaskFinish,WorkflowFinish</Event>"
        b"<ResultFormat>XML</ResultFormat></NotifyConfig></Request>"
    )
    await cos.update_queue("media", "p1", request)
    assert standin.queues["p1"].notify["Url"] == "https://relay.example/cos/callback?token=t"
    queues = await cos.list_queues("media")
    assert queues.findtext("QueueList/NotifyConfig/State") == "On"


async def test_a_wrong_key_is_a_signature_failure_that_names_no_secret(standin: CosStandIn) -> None:
    wrong = Credentials(CREDENTIALS.secret_id, "anotherSecretKey0000000000000000000")
    api = CosApi(standin.url, wrong, clock=time.time)
    try:
        with pytest.raises(CosUnavailable) as failure:
            await cos_list(api)
    finally:
        await api.aclose()
    assert failure.value.kind == "signature"
    assert "SignatureDoesNotMatch" in str(failure.value)
    assert wrong.secret_key not in str(failure.value)
    assert CREDENTIALS.secret_id not in str(failure.value)


async def test_a_clock_far_off_is_refused_as_cos_refuses_an_expired_key(standin: CosStandIn) -> None:
    api = CosApi(standin.url, CREDENTIALS, clock=lambda: time.time() - 3600)
    try:
        with pytest.raises(CosUnavailable) as failure:
            await cos_list(api)
    finally:
        await api.aclose()
    assert (failure.value.kind, "AccessDenied" in str(failure.value)) == ("signature", True)


async def cos_list(api: CosApi) -> None:
    async for _ in api.list_jobs("media", start=START, end=START, tag="Transcode"):
        pass


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (503, "ServiceUnavailable", "throttled"),
        (429, "SlowDown", "throttled"),
        (500, "InternalError", "server"),
        (404, "NoSuchBucket", "not_found"),
        (400, "InvalidArgument", "invalid"),
    ],
)
async def test_each_error_answer_is_one_failure_of_its_kind(
    standin: CosStandIn, cos: CosApi, status: int, code: str, kind: str
) -> None:
    standin.fail_with(status, code)
    with pytest.raises(CosUnavailable) as failure:
        await cos_list(cos)
    assert failure.value.kind == kind
    assert f"{status} {code}" in str(failure.value)


async def test_a_malformed_answer_is_invalid_and_a_slow_one_times_out(standin: CosStandIn, cos: CosApi) -> None:
    standin.malformed()
    with pytest.raises(CosUnavailable) as malformed:
        await cos_list(cos)
    assert malformed.value.kind == "invalid"
    standin.recover()
    standin.delay = 5
    with pytest.raises(CosUnavailable) as slow:
        await cos_list(cos)
    assert slow.value.kind == "timeout"


async def test_an_unreachable_endpoint_is_a_failure_not_a_crash() -> None:
    api = CosApi("http://127.0.0.1:9", CREDENTIALS, clock=time.time)
    try:
        with pytest.raises(CosUnavailable) as failure:
            await cos_list(api)
    finally:
        await api.aclose()
    assert failure.value.kind == "unreachable"
