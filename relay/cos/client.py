"""One COS source's job and queue APIs (../shared/cos/FORMAT.md §12b), signed, over an injected httpx transport.

Answers are read as defensively as callbacks (size cap before parsing, no DTD, no entities, UTF-8 only): COS is
a peer, and a peer's answer is input. Every failure is one `CosUnavailable` with a bounded ``kind`` for
metrics and logs; the answer's body and the credentials never appear in its message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal

from lxml import etree

from relay.domain.errors import Rejected
from relay.validate.parse import new_xml_parser, parse

# httpx (and the signer, built on it) is imported where a client is made and used: most gateways have no COS
# source, and importing it cost every `cos-relay serve` 0.05 s of CPU at start.
if TYPE_CHECKING:
    import httpx

    from relay.cos.signing import Credentials

#: The job families and the path each is listed and read under.
Family = Literal["media", "pictures", "speech", "documents"]
JOB_PATHS: dict[Family, str] = {
    "media": "/jobs",
    "pictures": "/pic_jobs",
    "speech": "/asr_jobs",
    "documents": "/doc_jobs",
}
#: Where jobs are read back by id: the families' paths, and AI jobs' (read back when confirming, never listed).
READ_PATHS: dict[str, str] = {**dict(JOB_PATHS.items()), "ai": "/ai_jobs"}
#: The families whose list needs no ``tag`` of the operator's: COS fixes it.
FIXED_TAGS: dict[Family, str] = {"speech": "SpeechRecognition", "documents": "DocProcess"}
QUEUE_PATHS: dict[Family, str] = {
    "media": "/queue",
    "pictures": "/picqueue",
    "speech": "/asrqueue",
    "documents": "/docqueue",
}

#: What a failure was, as a metric label.
Failure = Literal["signature", "not_found", "throttled", "server", "timeout", "unreachable", "invalid"]

#: An answer larger than this is refused before it is parsed (a page of 100 jobs is a few hundred KiB).
MAX_ANSWER = 16 * 1024 * 1024
#: Jobs per list page (COS's maximum).
PAGE_SIZE = 100
#: Job ids per read by id (COS's documented maximum per request).
IDS_PER_READ = 10
#: COS writes times with a numeric offset and no colon (``2022-06-30T18:37:37+0800``).
COS_TIME = "%Y-%m-%dT%H:%M:%S%z"


class CosUnavailable(Exception):
    """A call to COS failed; ``kind`` says how (for a metric label), the message says what, in one line."""

    def __init__(self, kind: Failure, message: str) -> None:
        super().__init__(message)
        self.kind: Failure = kind


@dataclass(frozen=True)
class Page:
    """One answer of a list: the body (the callback's own shape, for the ingest path) and the next page's token."""

    body: bytes
    root: etree._Element
    next_token: str


def cos_time(at: datetime) -> str:
    return at.astimezone(timezone(timedelta(hours=8))).strftime(COS_TIME)


class CosApi:
    """The job and queue APIs of one bucket, at ``base_url`` (``https://<bucket>.ci.<region>.myqcloud.com``
    unless the source names another endpoint)."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        clock: Callable[[], float],
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        import httpx

        from relay.cos.signing import CosAuth

        self._http = httpx.AsyncClient(
            base_url=base_url,
            auth=CosAuth(credentials, clock),
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"Accept": "application/xml"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_jobs(
        self,
        family: Family,
        *,
        start: datetime,
        end: datetime,
        tag: str | None = None,
        queue: str | None = None,
        states: str = "All",
    ) -> AsyncIterator[Page]:
        """Every page of the family's jobs created in [start, end], oldest first, following ``NextToken``."""
        params = {
            "tag": FIXED_TAGS.get(family) or tag or "",
            "orderByTime": "Asc",
            "states": states,
            "size": str(PAGE_SIZE),
            "startCreationTime": cos_time(start),
            "endCreationTime": cos_time(end),
        }
        if queue is not None:
            params["queueId"] = queue
        async for page in self._pages(JOB_PATHS[family], params):
            yield page

    async def list_workflow_runs(self, workflow: str, *, start: datetime, end: datetime) -> AsyncIterator[Page]:
        """Every page of a workflow's executions started in [start, end], oldest first."""
        params = {
            "workflowId": workflow,
            "orderByTime": "Asc",
            "states": "All",
            "size": str(PAGE_SIZE),
            "startCreationTime": cos_time(start),
            "endCreationTime": cos_time(end),
        }
        async for page in self._pages("/workflowexecution", params):
            yield page

    async def read_jobs(self, family: str, job_ids: list[str]) -> Page:
        """The jobs ``job_ids`` of ``family`` (a key of `READ_PATHS`) as COS has them now (at most
        `IDS_PER_READ`; ``GET /jobs/<id>,<id>``); unknown ids in NonExistJobIds."""
        if not 0 < len(job_ids) <= IDS_PER_READ:
            raise ValueError(f"read 1 to {IDS_PER_READ} jobs at a time, not {len(job_ids)}")
        return await self._page(f"{READ_PATHS[family]}/{','.join(job_ids)}", {})

    async def read_run(self, run_id: str) -> Page:
        """One workflow execution as COS has it now (``<Response><WorkflowExecution>``)."""
        return await self._page(f"/workflowexecution/{run_id}", {})

    async def list_queues(self, family: Family) -> etree._Element:
        """The family's queues (``<Response><QueueList>…``), first 100."""
        page = await self._page(QUEUE_PATHS[family], {"state": "All", "pageNumber": "1", "pageSize": "100"})
        return page.root

    async def update_queue(self, family: Family, queue_id: str, request: bytes) -> None:
        """PUT a queue's ``<Request>`` (its name, state and callback settings)."""
        await self._send("PUT", f"{QUEUE_PATHS[family]}/{queue_id}", {}, request)

    async def _pages(self, path: str, params: dict[str, str]) -> AsyncIterator[Page]:
        """Every page of a list, following ``NextToken`` until COS gives none (or the same one again)."""
        token = ""
        while True:
            page = await self._page(path, {**params, "nextToken": token})
            yield page
            if not page.next_token or page.next_token == token:
                return
            token = page.next_token

    async def _page(self, path: str, params: dict[str, str]) -> Page:
        body = await self._send("GET", path, params, None)
        try:
            root = parse(body, "xml", new_xml_parser())
        except Rejected as error:
            raise CosUnavailable("invalid", f"COS answered {path} with a body that is not its XML: {error}") from None
        if root.tag != "Response":
            raise CosUnavailable("invalid", f"COS answered {path} with <{root.tag}>, not <Response>")
        return Page(body, root, (root.findtext("NextToken") or "").strip())

    async def _send(self, method: str, path: str, params: dict[str, str], body: bytes | None) -> bytes:
        """The answer's body, read within `MAX_ANSWER`; `CosUnavailable` unless COS answered 2xx."""
        import httpx

        headers = {"Content-Type": "application/xml"} if body is not None else None
        request = self._http.build_request(method, path, params=params, content=body, headers=headers)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise _broken(error, f"no answer from COS to {method} {path}") from None
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise CosUnavailable("invalid", f"COS's answer to {method} {path} is over {MAX_ANSWER} bytes")
                chunks.append(chunk)
        except httpx.HTTPError as error:
            raise _broken(error, f"COS's answer to {method} {path} broke off") from None
        finally:
            await response.aclose()
        answer = b"".join(chunks)
        if response.status_code >= 300:
            raise _failure(method, path, response.status_code, answer)
        return answer


def _broken(error: httpx.HTTPError, what: str) -> CosUnavailable:
    """A transport failure: too slow, or the connection could not be made or broke."""
    import httpx

    if isinstance(error, httpx.TimeoutException):
        return CosUnavailable("timeout", f"{what}: timed out")
    return CosUnavailable("unreachable", f"{what}: {type(error).__name__}")


def _failure(method: str, path: str, status: int, body: bytes) -> CosUnavailable:
    code = _error_code(body)
    where = f"COS answered {method} {path} with {status}" + (f" {code}" if code else "")
    if status == 403:
        return CosUnavailable("signature", f"{where}: check the source's secret_id and secret_key")
    if status == 404:
        return CosUnavailable("not_found", f"{where}: check the source's bucket, region and endpoint")
    if status in (429, 503):
        return CosUnavailable("throttled", where)
    if status >= 500:
        return CosUnavailable("server", where)
    return CosUnavailable("invalid", where)


def _error_code(body: bytes) -> str:
    """COS's ``<Error><Code>`` if the body is one, clipped: it goes into log lines."""
    try:
        root = parse(body, "xml", new_xml_parser())
    except Rejected:
        return ""
    return (root.findtext("Code") or "")[:64] if root.tag == "Error" else ""
