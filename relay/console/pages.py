"""Read-only console pages: the overview, jobs, a job, callbacks. Each is one or two indexed queries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from relay.api import params
from relay.console.render import Renderer, pretty
from relay.domain.callback import CALLBACK_OUTCOMES, JOB_STATES, WORKFLOW_STATES
from relay.domain.errors import BadParameter, NotFound
from relay.store import Store
from relay.store.answers import MinuteCount
from relay.store.records import Page

#: Rows on one page of a listing.
PAGE = 50
#: Rows of each of a job's lists (states, deliveries, callbacks) on its page; "older" links page on.
ROWS = 20
#: How much of a raw callback body the job page shows.
BODY_PREFIX = 4096
#: How much of a job's detail its page shows: a detail can be megabytes, the API has it whole.
DETAIL_BYTES = 64 * 1024
#: The overview's windows: callbacks per minute over the last hour, finished jobs over the last day.
MINUTES = timedelta(hours=1)
DAY = timedelta(days=1)


def _filters(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The listing's filters as given (blank fields dropped), for the form and the next page's link."""
    return {name: value for name in names if (value := (params.one(request.query_params, name) or "").strip())}


def _pivot(rows: list[MinuteCount]) -> tuple[list[str], list[tuple[str, dict[str, int]]]]:
    """Callbacks per minute as a table: the outcomes seen are the columns, newest minute first."""
    outcomes = sorted({row["outcome"] for row in rows})
    minutes: dict[str, dict[str, int]] = {}
    for row in rows:
        minutes.setdefault(row["minute"], {})[row["outcome"]] = row["n"]
    return outcomes, list(minutes.items())


def shown_detail(detail: bytes) -> tuple[str, int, bool]:
    """What the job page shows of the stored ``detail``: indented when it is small, else its first `DETAIL_BYTES`
    as stored (parsing megabytes would hold the event loop); its size; whether it was cut."""
    if len(detail) <= DETAIL_BYTES:
        return pretty(detail), len(detail), False
    return detail[:DETAIL_BYTES].decode("utf-8", "ignore"), len(detail), True


def page_routes(store: Store, renderer: Renderer, clock: Callable[[], datetime]) -> list[BaseRoute]:
    async def overview(request: Request) -> Response:
        now = clock()
        counts = await anyio.to_thread.run_sync(store.overview, now - MINUTES, now - DAY)
        stats = await anyio.to_thread.run_sync(store.outbox_stats)
        outcomes, minutes = _pivot(counts["callbacks"])
        tags: dict[str, dict[str, int]] = {}
        for row in counts["jobs"]:
            tags.setdefault(row["tag"] or "", {})[row["state"]] = row["n"]
        by_state: dict[str, int] = {}
        for state in stats["subscribers"].values():
            by_state[state] = by_state.get(state, 0) + 1
        return await renderer.render(
            request,
            "overview.html",
            outcomes=outcomes,
            minutes=minutes,
            tags=sorted(tags.items()),
            outbox=stats["outbox"],
            subscriber_states=sorted(by_state.items()),
            queues=await store.list_queues(),
        )

    async def jobs(request: Request) -> Response:
        query = request.query_params
        wanted = (params.one(query, "job_id") or "").strip()
        if wanted:
            # Search by any id COS gives: a JobId, a RunId, or a workflow task's JobId (which leads to its run).
            return RedirectResponse(await _found(wanted), status_code=303)
        filters = _filters(request, ("state", "tag", "queue_id", "since"))
        since, state = filters.get("since"), filters.get("state")
        if state is not None and params.spelled(state, JOB_STATES) is None:
            raise BadParameter(f"state must be one of {', '.join(JOB_STATES)}")
        found = await store.list_jobs(
            state=None if state is None else params.spelled(state, JOB_STATES),
            tag=filters.get("tag"),
            queue_id=filters.get("queue_id"),
            since=None if since is None else params.parse_since(since, clock()).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            limit=PAGE,
            cursor=params.cursor(query),
        )
        return await renderer.render(
            request, "jobs.html", jobs=found.items, cursor=found.cursor, filters=filters, states=JOB_STATES
        )

    async def job(request: Request) -> Response:
        job_id, query = request.path_params["job_id"], request.query_params
        older_states = params.cursor(query, numeric=True, name="history_cursor")
        callbacks_cursor = params.cursor(query, numeric=True, name="callbacks_cursor")
        deliveries_cursor = params.cursor(query, pair=True, name="deliveries_cursor")
        found = await store.get_job(job_id)
        if found is None:
            raise NotFound(await _missing(job_id))
        history = (
            Page(found["history"], found["history_next_cursor"])
            if older_states is None
            else await store.job_history(job_id, ROWS, older_states)
        )
        assert history is not None  # the job exists: its history is a page, maybe empty
        if older_states is not None:
            history = Page(history.items[::-1], history.cursor)  # a timeline reads oldest first
        callbacks = await store.job_callbacks(job_id, BODY_PREFIX, ROWS, callbacks_cursor)
        deliveries = await store.job_deliveries(job_id, ROWS, deliveries_cursor)
        detail = await anyio.to_thread.run_sync(shown_detail, found["detail"])
        return await renderer.render(
            request,
            "job.html",
            job=found,
            detail=detail,
            history=history,
            callbacks=callbacks,
            deliveries=deliveries,
        )

    async def _found(wanted: str) -> str:
        """Where an id leads: its job, its workflow run, or the run one of whose tasks it is."""
        if await store.get_job(wanted) is not None:
            return f"/console/jobs/{quote(wanted, safe='')}"
        run_id = wanted if await store.get_workflow(wanted) is not None else await store.run_of_task(wanted)
        if run_id is not None:
            return f"/console/workflows/{quote(run_id, safe='')}"
        raise NotFound(await _missing(wanted))

    async def workflows(request: Request) -> Response:
        query = request.query_params
        filters = _filters(request, ("state", "workflow_id", "since"))
        since, state = filters.get("since"), filters.get("state")
        if state is not None and params.spelled(state, WORKFLOW_STATES) is None:
            raise BadParameter(f"state must be one of {', '.join(WORKFLOW_STATES)}")
        found = await store.list_workflows(
            state=None if state is None else params.spelled(state, WORKFLOW_STATES),
            workflow_id=filters.get("workflow_id"),
            since=None if since is None else params.parse_since(since, clock()).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            limit=PAGE,
            cursor=params.cursor(query),
        )
        return await renderer.render(
            request, "workflows.html", runs=found.items, cursor=found.cursor, filters=filters, states=WORKFLOW_STATES
        )

    async def in_flight(request: Request) -> Response:
        return await renderer.render(request, "in_flight.html", jobs=await store.list_in_flight(PAGE))

    async def workflow(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = await store.get_workflow(run_id)
        if run is None:
            raise NotFound(f"no workflow run has the id {run_id!r}")
        return await renderer.render(request, "workflow.html", run=run)

    async def _missing(job_id: str) -> str:
        """Why no job has the id: none at all, or COS said it does not know it (NonExistJobIds)."""
        reported = await store.list_nonexistent(job_id=job_id, limit=1)
        if not reported.items:
            return f"no job has the id {job_id!r}"
        last = reported.items[0]
        return (
            f"no job has the id {job_id!r}: COS reported it does not know it (NonExistJobIds) in callback"
            f" #{last['callback_id']}, received {last['received_at']}"
        )

    async def callbacks(request: Request) -> Response:
        query = request.query_params
        outcome = params.folded_choice(query, "outcome", (*CALLBACK_OUTCOMES, "rejected"))
        found = await store.list_callbacks(outcome=outcome, limit=PAGE, cursor=params.cursor(query, numeric=True))
        nonexistent = await store.list_nonexistent(limit=ROWS)
        return await renderer.render(
            request,
            "callbacks.html",
            callbacks=found.items,
            nonexistent=nonexistent.items,
            cursor=found.cursor,
            filters={"outcome": outcome} if outcome else {},
            outcomes=(*CALLBACK_OUTCOMES, "rejected"),
        )

    return [
        Route("/", overview, methods=["GET"]),
        Route("/jobs", jobs, methods=["GET"]),
        Route("/jobs/{job_id}", job, methods=["GET"]),
        Route("/in-flight", in_flight, methods=["GET"]),
        Route("/workflows", workflows, methods=["GET"]),
        Route("/workflows/{run_id}", workflow, methods=["GET"]),
        Route("/callbacks", callbacks, methods=["GET"]),
    ]
