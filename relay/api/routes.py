"""API endpoints. Handlers are thin: parse parameters, ask the store, render JSON."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from relay.api import params
from relay.domain.callback import CALLBACK_OUTCOMES, JOB_STATES
from relay.store import Store
from relay.store.records import Page

#: What ``/api/callbacks?outcome=`` takes: a stored outcome, or ``rejected`` for every refused callback.
OUTCOME_FILTERS = (*CALLBACK_OUTCOMES, "rejected")


def _json(payload: Any, status: int = 200) -> Response:
    return JSONResponse(payload, status_code=status)


def _not_found(what: str) -> Response:
    return _json({"error": "not_found", "detail": f"{what} is not known"}, 404)


def _page(page: Page) -> Response:
    return _json({"items": page.items, "next_cursor": page.cursor})


def api_routes(store: Store) -> list[BaseRoute]:
    async def get_job(request: Request) -> Response:
        job = await store.get_job(request.path_params["job_id"])
        return _json(job) if job else _not_found("job")

    async def list_jobs(request: Request) -> Response:
        query = request.query_params
        page = await store.list_jobs(
            state=params.folded_choice(query, "state", JOB_STATES),
            tag=params.one(query, "tag"),
            queue_id=params.one(query, "queue_id"),
            since=params.since(query),
            limit=params.limit(query),
            cursor=params.cursor(query),
        )
        return _page(page)

    async def get_workflow(request: Request) -> Response:
        run = await store.get_workflow(request.path_params["run_id"])
        return _json(run) if run else _not_found("workflow run")

    async def list_callbacks(request: Request) -> Response:
        query = request.query_params
        page = await store.list_callbacks(
            outcome=params.folded_choice(query, "outcome", OUTCOME_FILTERS),
            limit=params.limit(query),
            cursor=params.cursor(query, numeric=True),
        )
        return _page(page)

    return [
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/workflows/{run_id}", get_workflow, methods=["GET"]),
        Route("/callbacks", list_callbacks, methods=["GET"]),
    ]
