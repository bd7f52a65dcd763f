"""A COS stand-in for the tests: COS itself cannot be reached from here, so this real HTTP server on loopback
plays it. It checks every request's v5 signature (403 ``SignatureDoesNotMatch`` on a wrong key, 403
``AccessDenied`` outside the key's time, and every query parameter and the host must be signed), serves the
job and queue APIs (../shared/cos/FORMAT.md §12b) from a seeded set of jobs in the documented formats with
``NextToken`` paging, records what it was asked, and can be told to fail (any status, slow, malformed).

The signature is checked with relay.cos.signing's canonical request; tests/cos/test_signing.py proves that
it is the official SDK's (cos-python-sdk-v5 ``CosS3Auth``).
"""

from __future__ import annotations

import copy
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import unquote

import anyio
import anyio.to_thread
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.cos.signing import Credentials, signature
from tests.conftest import DATA
from tests.live import ThreadServer

BUCKET = "examplebucket-1250000000"
REGION = "ap-guangzhou"
COS_TIME = "%Y-%m-%dT%H:%M:%S%z"
FINAL_STATES = ("Success", "Failed", "Cancel")
FAMILY_PATHS = {"jobs": "media", "pic_jobs": "pictures", "asr_jobs": "speech", "doc_jobs": "documents", "ai_jobs": "ai"}
QUEUE_PATHS = {"queue": "media", "picqueue": "pictures", "asrqueue": "speech", "docqueue": "documents"}
_TEMPLATE = etree.fromstring((DATA / "samples" / "transcode_success.xml").read_bytes()).find("JobsDetail")
_RUN_TEMPLATE = etree.fromstring((DATA / "samples" / "workflow_finish_success.xml").read_bytes()).find(
    "WorkflowExecution"
)


@dataclass
class Job:
    """A job COS knows: its detail is the transcode sample's, with these fields in it."""

    job_id: str
    created: datetime
    state: str = "Success"
    tag: str = "Transcode"
    queue_id: str = "pe820cf648126910f305549c39b7b7183"
    family: str = "media"
    bucket: str = BUCKET

    def detail(self) -> etree._Element:
        element = copy.deepcopy(_TEMPLATE)
        assert element is not None
        for name, value in (
            ("JobId", self.job_id),
            ("State", self.state),
            ("Tag", self.tag),
            ("QueueId", self.queue_id),
            ("CreationTime", self.created.strftime(COS_TIME)),
        ):
            found = element.find(name)
            assert found is not None, name
            found.text = value
        bucket = element.find("Input/BucketId")
        assert bucket is not None
        bucket.text = self.bucket
        if self.state not in FINAL_STATES:
            for name in ("EndTime", "Operation/MediaResult", "Operation/MediaInfo"):
                gone = element.find(name)
                if gone is not None:
                    gone.getparent().remove(gone)  # type: ignore[union-attr]
        return element


@dataclass
class Run:
    """A workflow execution COS knows: the workflow sample's, with these fields in it."""

    run_id: str
    workflow_id: str
    created: datetime
    state: str = "Success"

    def detail(self) -> etree._Element:
        element = copy.deepcopy(_RUN_TEMPLATE)
        assert element is not None
        for name, value in (
            ("RunId", self.run_id),
            ("WorkflowId", self.workflow_id),
            ("State", self.state),
            ("CreateTime", self.created.strftime("%Y-%m-%d %H:%M:%S%z")),
        ):
            found = element.find(name)
            assert found is not None, name
            found.text = value
        return element


@dataclass
class Queue:
    queue_id: str
    name: str
    family: str = "media"
    state: str = "Active"
    notify: dict[str, str] = field(default_factory=lambda: {"State": "Off", "Type": "Url", "Url": "", "Event": ""})


@dataclass(frozen=True)
class Asked:
    """One request the stand-in answered: what a test counts."""

    method: str
    path: str
    params: dict[str, str]
    status: int
    #: When it was answered (time.monotonic()).
    at: float = 0.0


class CosStandIn:
    """The job and queue APIs of one bucket. Seed ``jobs`` and ``queues``; set ``failing`` to make every
    answer fail (``failing(request) -> Response | None``), or use `fail_with`, `slow` and `malformed`."""

    def __init__(
        self,
        credentials: Credentials,
        clock: Callable[[], float] = time.time,
        page_size: int = 100,
        port: int | None = None,
    ) -> None:
        self.credentials = credentials
        self.jobs: dict[str, Job] = {}
        self.runs: dict[str, Run] = {}
        self.queues: dict[str, Queue] = {}
        self.asked: list[Asked] = []
        self.failing: Callable[[Request], Response | None] | None = None
        self.delay = 0.0
        #: While set, requests wait for it (`hold`, `let_go`); ``waiting`` counts those waiting now.
        self._gate: threading.Event | None = None
        self.waiting = 0
        self.page_size = page_size
        self._clock = clock
        self._lock = threading.RLock()
        self.server = ThreadServer(
            Starlette(
                routes=[
                    Route("/{family:str}", self._list, methods=["GET"]),
                    Route("/{family:str}/{ids:str}", self._by_id, methods=["GET"]),
                    Route("/{family:str}/{queue_id:str}", self._update_queue, methods=["PUT"]),
                ]
            ),
            port=port,
        )

    # -- running and steering ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> CosStandIn:
        self.server.start()
        return self

    def stop(self) -> None:
        self.let_go()
        self.server.stop()

    def add(self, *jobs: Job) -> None:
        with self._lock:
            self.jobs.update((job.job_id, job) for job in jobs)

    def fail_with(self, status: int, code: str = "ServiceUnavailable") -> None:
        """Every answer is ``status`` with COS's ``<Error>`` body, until `recover`."""
        self.failing = lambda request: _error(status, code, "the stand-in was told to fail")

    def malformed(self) -> None:
        self.failing = lambda request: Response(b"<Response><JobsDetail>", media_type="application/xml")

    def hold(self) -> None:
        """Every request from now on hangs, unanswered, until `let_go` (COS slow or stuck)."""
        self._gate = threading.Event()

    def let_go(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def recover(self) -> None:
        self.failing = None
        self.delay = 0.0

    def answered_at(self, path: str) -> list[float]:
        """When each request for exactly ``path`` was answered (time.monotonic())."""
        with self._lock:
            return [asked.at for asked in self.asked if asked.path == path]

    def count(self, path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for asked in self.asked if asked.path.startswith(path_prefix))

    # -- the API -------------------------------------------------------------------------------------------

    async def _answer(self, request: Request, answer: Callable[[], Response]) -> Response:
        if self.delay:
            await anyio.sleep(self.delay)
        gate = self._gate
        if gate is not None:
            with self._lock:
                self.waiting += 1
            await anyio.to_thread.run_sync(gate.wait)
            with self._lock:
                self.waiting -= 1
        response = self._refusal(request) or (self.failing and self.failing(request)) or answer()
        with self._lock:
            params = dict(request.query_params)
            self.asked.append(Asked(request.method, request.url.path, params, response.status_code, time.monotonic()))
        return response

    async def _list(self, request: Request) -> Response:
        family = request.path_params["family"]
        if family in QUEUE_PATHS:
            return await self._answer(request, lambda: self._queue_list(QUEUE_PATHS[family]))
        if family == "workflowexecution":
            return await self._answer(request, lambda: self._run_list(request))
        return await self._answer(request, lambda: self._job_list(request, FAMILY_PATHS.get(family)))

    async def _by_id(self, request: Request) -> Response:
        if request.path_params["family"] == "workflowexecution":
            run_id = request.path_params["ids"]
            return await self._answer(request, lambda: self._run_by_id(run_id))
        family = FAMILY_PATHS.get(request.path_params["family"])
        ids = request.path_params["ids"].split(",")
        return await self._answer(request, lambda: self._jobs_by_id(family, ids))

    def _run_by_id(self, run_id: str) -> Response:
        """One execution (DescribeWorkflowExecution); a run it does not know, an answer without one."""
        response = etree.Element("Response")
        with self._lock:
            run = self.runs.get(run_id)
        if run is not None:
            response.append(run.detail())
        return _xml(response)

    async def _update_queue(self, request: Request) -> Response:
        body = await request.body()
        return await self._answer(request, lambda: self._set_queue(request.path_params["queue_id"], body))

    def _job_list(self, request: Request, family: str | None) -> Response:
        if family is None:
            return _error(404, "NoSuchKey", "no such API")
        params = request.query_params
        start, end = params.get("startCreationTime"), params.get("endCreationTime")
        with self._lock:
            chosen = sorted(
                (
                    job
                    for job in self.jobs.values()
                    if job.family == family
                    and (family in ("speech", "documents") or job.tag == params.get("tag"))
                    and params.get("queueId") in (None, job.queue_id)
                    and params.get("states", "All") in ("All", job.state)
                    and (start is None or job.created >= datetime.strptime(start, COS_TIME))
                    and (end is None or job.created <= datetime.strptime(end, COS_TIME))
                ),
                key=lambda job: (job.created, job.job_id),
                reverse=params.get("orderByTime", "Desc") == "Desc",
            )
        return self._paged(request, [job.detail() for job in chosen])

    def _run_list(self, request: Request) -> Response:
        params = request.query_params
        start, end = params.get("startCreationTime"), params.get("endCreationTime")
        with self._lock:
            chosen = sorted(
                (
                    run
                    for run in self.runs.values()
                    if run.workflow_id == params.get("workflowId")
                    and (start is None or run.created >= datetime.strptime(start, COS_TIME))
                    and (end is None or run.created <= datetime.strptime(end, COS_TIME))
                ),
                key=lambda run: (run.created, run.run_id),
            )
        return self._paged(request, [run.detail() for run in chosen])

    def _paged(self, request: Request, elements: list[etree._Element]) -> Response:
        size = min(int(request.query_params.get("size", "10")), self.page_size)
        offset = int(request.query_params.get("nextToken") or "0")
        response = etree.Element("Response")
        response.extend(elements[offset : offset + size])
        more = offset + size < len(elements)
        etree.SubElement(response, "NextToken").text = str(offset + size) if more else ""
        return _xml(response)

    def _jobs_by_id(self, family: str | None, ids: list[str]) -> Response:
        response = etree.Element("Response")
        with self._lock:
            known = [self.jobs.get(job_id) for job_id in ids]
        for job in known:
            if job is not None and job.family == family:
                response.append(job.detail())
        missing = [job_id for job_id, job in zip(ids, known, strict=True) if job is None or job.family != family]
        if missing:
            etree.SubElement(response, "NonExistJobIds").text = ",".join(missing)
        return _xml(response)

    def _queue_list(self, family: str) -> Response:
        response = etree.Element("Response")
        etree.SubElement(response, "RequestId").text = "standin"
        with self._lock:
            queues = [queue for queue in self.queues.values() if queue.family == family]
        for queue in queues:
            element = etree.SubElement(response, "QueueList")
            for name, value in (("QueueId", queue.queue_id), ("Name", queue.name), ("State", queue.state)):
                etree.SubElement(element, name).text = value
            notify = etree.SubElement(element, "NotifyConfig")
            for name, value in queue.notify.items():
                etree.SubElement(notify, name).text = value
        etree.SubElement(response, "TotalCount").text = str(len(queues))
        return _xml(response)

    def _set_queue(self, queue_id: str, body: bytes) -> Response:
        with self._lock:
            queue = self.queues.get(queue_id)
            if queue is None:
                return _error(404, "NoSuchQueue", f"queue {queue_id} does not exist")
            try:
                request = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
            except etree.XMLSyntaxError:
                return _error(400, "MalformedXML", "the request body is not XML")
            queue.name = request.findtext("Name") or queue.name
            queue.state = request.findtext("State") or queue.state
            notify = request.find("NotifyConfig")
            if notify is not None:
                queue.notify = {child.tag: child.text or "" for child in notify if isinstance(child.tag, str)}
            return self._queue_list(queue.family)

    # -- the signature -------------------------------------------------------------------------------------

    def _refusal(self, request: Request) -> Response | None:
        fields = dict(part.partition("=")[::2] for part in request.headers.get("authorization", "").split("&"))
        if fields.get("q-ak") != self.credentials.secret_id:
            return _error(403, "InvalidAccessKeyId", "the q-ak is not a known SecretId")
        start, _, end = fields.get("q-key-time", "").partition(";")
        if not (start.isdigit() and end.isdigit() and int(start) <= self._clock() <= int(end)):
            return _error(403, "AccessDenied", "request has expired or is not yet valid")
        header_list = fields.get("q-header-list", "").split(";") if fields.get("q-header-list") else []
        param_list = fields.get("q-url-param-list", "").split(";") if fields.get("q-url-param-list") else []
        if "host" not in header_list or {key.lower() for key in request.query_params} - set(param_list):
            return _error(403, "AccessDenied", "the host and every query parameter must be signed")
        headers = {name: request.headers.get(unquote(name), "") for name in header_list}
        params = {key: value for key, value in request.query_params.items() if key.lower() in param_list}
        expected = signature(
            self.credentials.secret_key,
            request.method,
            request.url.path,
            params,
            headers,
            fields.get("q-key-time", ""),
        )
        if not hmac.compare_digest(expected, fields.get("q-signature", "")):
            return _error(403, "SignatureDoesNotMatch", "the signature does not match")
        return None


def _xml(root: etree._Element) -> Response:
    return Response(etree.tostring(root, xml_declaration=True, encoding="utf-8"), media_type="application/xml")


def _error(status: int, code: str, message: str) -> Response:
    root = etree.Element("Error")
    for name, value in (("Code", code), ("Message", message), ("RequestId", "standin")):
        etree.SubElement(root, name).text = value
    return Response(etree.tostring(root), status_code=status, media_type="application/xml")
