"""The document of `relay.api.routes`: jobs, workflow runs and raw callbacks (read only)."""

from __future__ import annotations

from relay.api.openapi.operations import admin, answer, parameter
from relay.api.openapi.schemas import DURATION_OR_INSTANT, Schema

_TAG = "jobs"
_SINCE: Schema = {
    "name": "since",
    "in": "query",
    "required": False,
    "schema": DURATION_OR_INSTANT,
    "description": "Only jobs updated in the last 90s, 30m, 2h or 7d, or at or after an ISO-8601 instant"
    " (2024-11-05T10:00:00Z; no offset: UTC).",
}


_SINCE_RUNS: Schema = {**_SINCE, "description": str(_SINCE["description"]).replace("jobs", "runs")}


def _by_text(name: str, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": description}


def _path(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


PATHS: dict[str, dict[str, Schema]] = {
    "/api/jobs": {
        "get": admin(
            "listJobs",
            "Jobs, most recently updated first",
            {200: answer("One page of jobs.", "JobPage")},
            errors=(400,),
            parameters=(
                parameter("jobState"),
                _by_text("tag", "Only jobs with this Tag (Transcode, Snapshot, ...)."),
                _by_text("queue_id", "Only jobs of this queue."),
                _SINCE,
                parameter("limit"),
                parameter("jobCursor"),
            ),
            tag=_TAG,
        )
    },
    "/api/jobs/{job_id}": {
        "get": admin(
            "getJob",
            "One job with its detail and its latest states",
            {200: answer("The job.", "JobDetail")},
            errors=(404,),
            parameters=(_path("job_id"),),
            tag=_TAG,
        )
    },
    "/api/jobs/{job_id}/history": {
        "get": admin(
            "listJobHistory",
            "A job's states, newest first (the job itself carries the latest 20)",
            {200: answer("One page of the job's states.", "JobHistoryPage")},
            errors=(400, 404),
            parameters=(_path("job_id"), parameter("limit"), parameter("cursor")),
            tag=_TAG,
        )
    },
    "/api/jobs/{job_id}/callbacks": {
        "get": admin(
            "listJobCallbacks",
            "The raw callbacks that carried a job's states, newest first",
            {200: answer("One page of the job's callbacks.", "CallbackPage")},
            errors=(400, 404),
            parameters=(_path("job_id"), parameter("limit"), parameter("cursor")),
            tag=_TAG,
        )
    },
    "/api/jobs/{job_id}/deliveries": {
        "get": admin(
            "listJobDeliveries",
            "Every delivery of a job's events, newest first",
            {200: answer("One page of the job's deliveries.", "DeliveryPage")},
            errors=(400, 404),
            parameters=(_path("job_id"), parameter("limit"), parameter("cursor")),
            tag=_TAG,
        )
    },
    "/api/workflows": {
        "get": admin(
            "listWorkflowRuns",
            "Workflow runs, most recently updated first",
            {
                200: answer(
                    "One page of runs (each run's tasks and detail: GET /api/workflows/{run_id}).", "WorkflowRunPage"
                )
            },
            errors=(400,),
            parameters=(
                parameter("runState"),
                _by_text("workflow_id", "Only runs of this workflow."),
                _by_text("name", "Only runs of the workflow of this name."),
                _SINCE_RUNS,
                parameter("limit"),
                parameter("jobCursor"),
            ),
            tag=_TAG,
        )
    },
    "/api/workflows/{run_id}": {
        "get": admin(
            "getWorkflowRun",
            "One workflow run with its tasks and state history",
            {200: answer("The run.", "WorkflowRun")},
            errors=(404,),
            parameters=(_path("run_id"),),
            tag=_TAG,
        )
    },
    "/api/nonexistent-jobs": {
        "get": admin(
            "listNonexistentJobs",
            "Job ids COS reported it does not know (NonExistJobIds), newest first",
            {200: answer("One page of job ids, each with the callback that named it.", "NonexistentJobPage")},
            errors=(400,),
            parameters=(
                _by_text("job_id", "Only this job id."),
                parameter("limit"),
                parameter("cursor"),
            ),
            tag=_TAG,
        )
    },
    "/api/callbacks": {
        "get": admin(
            "listCallbacks",
            "Callbacks as received, refused ones included, newest first",
            {200: answer("One page of callbacks.", "CallbackPage")},
            errors=(400,),
            parameters=(parameter("outcome"), parameter("limit"), parameter("cursor")),
            tag=_TAG,
        )
    },
}
