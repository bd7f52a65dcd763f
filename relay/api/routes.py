"""API endpoints. Handlers are thin: parse parameters, ask the store, render JSON."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from relay.api import params
from relay.domain.callback import CALLBACK_OUTCOMES, JOB_STATES, WORKFLOW_STATES
from relay.store import Store
from relay.store.answers import JobWithHistory
from relay.store.records import Item, Page

#: What ``/api/callbacks?outcome=`` takes: a stored outcome, or ``rejected`` for every refused callback.
OUTCOME_FILTERS = (*CALLBACK_OUTCOMES, "rejected")
#: How much of each raw callback ``/api/jobs/{job_id}/callbacks`` shows, as ``/api/callbacks`` does.
BODY_PREFIX = 4096


async def _json(payload: Any, status: int = 200) -> Response:
    """``payload`` encoded in a worker thread: a job's detail can be megabytes, and encoding it on the event
    loop held every other request (``/healthz`` too) for as long."""
    body = await anyio.to_thread.run_sync(orjson.dumps, payload)
    return Response(body, status_code=status, media_type="application/json")


def _with_detail(job: JobWithHistory) -> bytes:
    """The job's JSON around its ``detail`` as stored: a detail of megabytes is neither parsed nor encoded again
    (each held the GIL, and so every request, for tens of milliseconds)."""
    rest = {key: value for key, value in job.items() if key != "detail"}
    return b"".join((orjson.dumps(rest)[:-1], b',"detail":', job["detail"], b"}"))


async def _not_found(what: str, why: str = "") -> Response:
    return await _json({"error": "not_found", "detail": f"{what} is not known{why}"}, 404)


async def _page(page: Page[Item]) -> Response:
    return await _json({"items": page.items, "next_cursor": page.cursor})


def api_routes(store: Store, clock: Callable[[], datetime]) -> list[BaseRoute]:
    async def get_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = await store.get_job(job_id)
        if job is None:
            # A workflow's task is recorded with its run, not as a job: say where it is.
            run_id = await store.run_of_task(job_id)
            where = f": it is a task of workflow run {run_id} (GET /api/workflows/{run_id})" if run_id else ""
            return await _not_found("job", where)
        body = await anyio.to_thread.run_sync(_with_detail, job)
        return Response(body, media_type="application/json")

    async def job_history(request: Request) -> Response:
        query = request.query_params
        page = await store.job_history(
            request.path_params["job_id"], params.limit(query), params.cursor(query, numeric=True)
        )
        return await _page(page) if page is not None else await _not_found("job")

    async def job_callbacks(request: Request) -> Response:
        job_id, query = request.path_params["job_id"], request.query_params
        limit, cursor = params.limit(query), params.cursor(query, numeric=True)
        if await store.job_history(job_id, 1, None) is None:
            return await _not_found("job")
        return await _page(await store.job_callbacks(job_id, BODY_PREFIX, limit, cursor))

    async def job_deliveries(request: Request) -> Response:
        job_id, query = request.path_params["job_id"], request.query_params
        limit, cursor = params.limit(query), params.cursor(query, pair=True)
        if await store.job_history(job_id, 1, None) is None:
            return await _not_found("job")
        return await _page(await store.job_deliveries(job_id, limit, cursor))

    async def list_jobs(request: Request) -> Response:
        query = request.query_params
        page = await store.list_jobs(
            state=params.folded_choice(query, "state", JOB_STATES),
            tag=params.one(query, "tag"),
            queue_id=params.one(query, "queue_id"),
            since=params.since(query, clock()),
            limit=params.limit(query),
            cursor=params.cursor(query),
        )
        return await _page(page)

    async def get_workflow(request: Request) -> Response:
        run = await store.get_workflow(request.path_params["run_id"])
        return await _json(run) if run else await _not_found("workflow run")

    async def list_callbacks(request: Request) -> Response:
        query = request.query_params
        page = await store.list_callbacks(
            outcome=params.folded_choice(query, "outcome", OUTCOME_FILTERS),
            limit=params.limit(query),
            cursor=params.cursor(query, numeric=True),
        )
        return await _page(page)

    async def list_workflows(request: Request) -> Response:
        query = request.query_params
        page = await store.list_workflows(
            state=params.folded_choice(query, "state", WORKFLOW_STATES),
            workflow_id=params.one(query, "workflow_id"),
            name=params.one(query, "name"),
            since=params.since(query, clock()),
            limit=params.limit(query),
            cursor=params.cursor(query),
        )
        return await _page(page)

    async def list_nonexistent(request: Request) -> Response:
        query = request.query_params
        page = await store.list_nonexistent(
            job_id=params.one(query, "job_id"), limit=params.limit(query), cursor=params.cursor(query, numeric=True)
        )
        return await _page(page)

    return [
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/nonexistent-jobs", list_nonexistent, methods=["GET"]),
        Route("/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/jobs/{job_id}/history", job_history, methods=["GET"]),
        Route("/jobs/{job_id}/callbacks", job_callbacks, methods=["GET"]),
        Route("/jobs/{job_id}/deliveries", job_deliveries, methods=["GET"]),
        Route("/workflows", list_workflows, methods=["GET"]),
        Route("/workflows/{run_id}", get_workflow, methods=["GET"]),
        Route("/callbacks", list_callbacks, methods=["GET"]),
    ]
