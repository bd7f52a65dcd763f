"""The OpenAPI components: body schemas, shared parameters, error answers and the credentials.

Every limit is taken from the constant the code enforces (`relay.api.params`, `relay.domain`), so a
changed limit changes the document with it.
"""

from __future__ import annotations

from typing import Any

from relay.api.params import MAX_ID, MAX_LIMIT
from relay.api.routes import OUTCOME_FILTERS
from relay.domain.callback import CALLBACK_OUTCOMES, JOB_STATES, WORKFLOW_STATES
from relay.domain.confirm import CONFIRMATIONS, REASONS
from relay.domain.delivery import DELIVERY_STATES, Outcome
from relay.domain.destinations import HANDSHAKE_STATES, ContentMode, Kind
from relay.domain.events import EVENT_TYPES
from relay.domain.filters import FILTER_KEYS
from relay.domain.retry import MAX_DELAY, MAX_STEPS
from relay.domain.subscribers import MAX_IN_FLIGHT, NAME, TIMEOUTS, SubscriberState
from relay.store.rows import JOB_HISTORY

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
TEXT: Schema = {"type": ["string", "null"]}
WHOLE: Schema = {"type": "integer"}
MAYBE_WHOLE: Schema = {"type": ["integer", "null"]}
MAYBE_NUMBER: Schema = {"type": ["number", "null"]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def record(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), closed: bool = True) -> Schema:
    """An object with ``properties``, all required but ``optional``."""
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


def page_of(item: str) -> Schema:
    return record({"items": {"type": "array", "items": ref(item)}, "next_cursor": TEXT})


#: The one grammar of durations (`relay.domain.numbers.ascii_span`): 90s, 30m, 2h, 7d, 1.5h or plain seconds.
DURATION: Schema = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?[smhd]?$"}
#: A duration back from now, or an instant (``since``).
DURATION_OR_INSTANT: Schema = {"anyOf": [DURATION, {"type": "string", "format": "date-time"}]}
#: What a listing shows of a workflow run; `WorkflowRun` adds its detail, tasks and states.
_RUN: dict[str, Schema] = {
    "run_id": STRING,
    "workflow_id": TEXT,
    "workflow_name": TEXT,
    "state": STRING,
    "bucket": TEXT,
    "object_key": TEXT,
    "create_time": TEXT,
    "first_seen_at": STRING,
    "updated_at": STRING,
}
_SCHEDULE: Schema = {
    "type": ["array", "null"],
    "items": {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_DELAY}, DURATION]},
    "minItems": 1,
    "maxItems": MAX_STEPS,
    "description": "How long to wait after each failed attempt, in seconds or as durations (5s, 5m, 2h, up to 7d);"
    " null: the gateway's RELAY_RETRY_SCHEDULE.",
}
_SUBSCRIBER_OPTIONS: dict[str, Schema] = {
    "url": {
        "type": "string",
        "pattern": "^([Hh][Tt][Tt][Pp][Ss]?|amqps?|nats|tls|rediss?)://",
        "description": "Webhooks and robots: an http(s) URL without credentials; rabbitmq: amqp(s)://, nats:"
        " nats:// or tls://, redis: redis(s):// (these may carry a login). Resolving only to public addresses (or"
        " to RELAY_ALLOW_NETWORKS).",
    },
    "kind": {
        "enum": [kind.value for kind in Kind],
        "description": "webhook (default): signed CloudEvents POSTed to url; wecom, feishu, dingtalk, slack: a"
        " chat message to the robot's URL; rabbitmq, nats, redis: the event published to the broker.",
    },
    "rate": {
        "type": ["string", "null"],
        "pattern": "^[0-9]{1,6}/[sm]$",
        "description": 'Deliveries started per second or minute, across replicas ("10/s", "600/m"); null: none.',
    },
    "handshake": {
        "type": "boolean",
        "description": "Webhooks: validate the endpoint with the CloudEvents abuse-protection handshake"
        " (OPTIONS, WebHook-Request-Origin) first and honour WebHook-Allowed-Rate; default false.",
    },
    "content_mode": {
        "enum": [mode.value for mode in ContentMode],
        "description": "structured (default): the whole event as the body; binary: its data as the body and"
        " ce-* headers (webhooks and brokers).",
    },
    "template": {
        "type": ["string", "null"],
        "description": "Robots: the chat message's template (null: the default message per event type).",
    },
    "types": {
        "description": f"Event type patterns (* wildcards), each matching at least one of: {', '.join(EVENT_TYPES)}.",
        "oneOf": [{"type": "array", "items": STRING, "minItems": 1}, STRING],
    },
    "filters": {
        "description": "Exact matches on event attributes (object_prefix: a prefix of the object key).",
        "oneOf": [
            {"type": "object", "propertyNames": {"enum": list(FILTER_KEYS)}, "additionalProperties": STRING},
            {"type": "array", "items": {"type": "string", "pattern": "^[^=]+="}},
        ],
    },
    "max_in_flight": {"type": "integer", "minimum": MAX_IN_FLIGHT[0], "maximum": MAX_IN_FLIGHT[1]},
    "timeout": {"type": "number", "minimum": TIMEOUTS[0], "maximum": TIMEOUTS[1]},
    "retry_schedule": _SCHEDULE,
    "store_response": {
        "type": "boolean",
        "description": "Keep the first 4 KiB of each answer with its attempt (shown to admins); default false.",
    },
}
_SECRET: Schema = {
    "type": "string",
    "pattern": "^(whsec_)?[A-Za-z0-9+/]+={0,2}$",
    "description": "Standard Webhooks secret: whsec_ and base64 of 16 to 64 bytes. Omitted: one is generated."
    " Feishu and DingTalk robots: the robot's own signing secret (omitted: unsigned).",
}
_SHOWN_SUBSCRIBER = {
    "name": STRING,
    "url": STRING,
    "state": {"enum": [state.value for state in SubscriberState]},
    "secret": {"type": "string", "description": "Masked (whsec_abcd…) except when just created or rotated."},
    "types": {"type": "array", "items": STRING},
    "filters": {"type": "object", "additionalProperties": STRING},
    "max_in_flight": WHOLE,
    "timeout": {"type": "number"},
    "retry_schedule": {"type": ["array", "null"], "items": {"type": "number"}},
    "disabled_reason": TEXT,
    "failing_since": TEXT,
    "previous_secret_expires_at": TEXT,
    "created_at": TEXT,
    "source": STRING,
    "store_response": {"type": "boolean"},
    "kind": {"enum": [kind.value for kind in Kind]},
    "rate": TEXT,
    "handshake": {"type": "boolean"},
    "content_mode": {"enum": [mode.value for mode in ContentMode]},
    "template": TEXT,
    "handshake_verdict": {
        "anyOf": [
            {"type": "null"},
            record(
                {
                    "state": {"enum": list(HANDSHAKE_STATES)},
                    "checked_at": TEXT,
                    "expires_at": TEXT,
                    "allowed_rate": TEXT,
                    "detail": TEXT,
                }
            ),
        ],
        "description": "The CloudEvents handshake's verdict; null for a subscriber with handshake false. state:"
        " granted, refused, or pending (its receiver not yet asked at its current url; asked before the next"
        " delivery). checked_at: when the receiver answered; expires_at: until when a grant holds (null otherwise);"
        " allowed_rate: its WebHook-Allowed-Rate per minute (null: no limit); detail: the answer in a line.",
    },
    "last_outcome": {"enum": [*(outcome.value for outcome in Outcome), None]},
    "last_error": TEXT,
    "last_attempt_at": TEXT,
}
_DELIVERY = {
    "id": {
        "type": ["integer", "null"],
        "description": "null for a delivery with no row of its own (delivered in order, in flight or pending in the"
        " event log): it is known by subscriber_id and event_id.",
    },
    "event_id": STRING,
    "event_type": STRING,
    "subject": TEXT,
    "subscriber": STRING,
    "subscriber_id": WHOLE,
    "state": {"enum": list(DELIVERY_STATES)},
    "attempts": WHOLE,
    "failures": WHOLE,
    "next_attempt_at": TEXT,
    "last_outcome": TEXT,
    "last_status": MAYBE_WHOLE,
    "created_at": STRING,
    "updated_at": STRING,
    "delivered_at": TEXT,
}
_ATTEMPT = record(
    {
        "id": WHOLE,
        "started_at": STRING,
        "duration": MAYBE_NUMBER,
        "outcome": STRING,
        "status": MAYBE_WHOLE,
        "error": TEXT,
        "response_body": {"type": "string", "description": "The first bytes of the subscriber's answer."},
        "trigger": {"enum": ["first", "retry", "manual"]},
    }
)
_JOB = {
    "job_id": STRING,
    "state": {"enum": list(JOB_STATES)},
    "tag": TEXT,
    "queue_id": TEXT,
    "code": TEXT,
    "message": TEXT,
    "input": record({"bucket": TEXT, "object": TEXT, "region": TEXT}),
    "workflow_run_id": TEXT,
    "creation_time": TEXT,
    "start_time": TEXT,
    "end_time": TEXT,
    "times_as_sent": record({"creation_time": TEXT, "start_time": TEXT, "end_time": TEXT}),
    "first_seen_at": STRING,
    "updated_at": STRING,
}
_CALLBACK = {
    "id": WHOLE,
    "received_at": STRING,
    "source_addr": TEXT,
    "content_type": TEXT,
    "format": STRING,
    "size": WHOLE,
    "event_name": TEXT,
    "outcome": {"enum": list(CALLBACK_OUTCOMES)},
    "reason": TEXT,
    "error_path": TEXT,
    "dedup_key": TEXT,
    "body_truncated": {"type": "boolean"},
    "body_prefix": {"type": "string", "description": "The first 4 KB of the body as received."},
    "confirmation": {
        "enum": [None, *CONFIRMATIONS],
        "description": "For a COS source with confirm = true: whether COS confirmed the callback's jobs (waiting,"
        " confirmed, unconfirmed: held for good; released or discarded: an admin's decision). null: not asked.",
    },
}
_CONFIRMATION: dict[str, Schema] = {
    "callback_id": {**WHOLE, "description": "The callback that brought the job's state."},
    "status": {"enum": list(CONFIRMATIONS)},
    "reason": {"enum": [None, *REASONS], "description": "Why COS did not confirm the job."},
    "seen": {**TEXT, "description": "The job's state as COS has it (empty: COS does not know the job)."},
    "source": STRING,
    "checked_at": TEXT,
}
_HISTORY = {"state": STRING, "received_at": STRING, "callback_id": WHOLE}
_JOB_HISTORY = {**_HISTORY, "code": TEXT, "message": TEXT, "end_time": TEXT, "end_time_raw": TEXT}
_TASK = {
    "position": WHOLE,
    "job_id": TEXT,
    "type": TEXT,
    "name": TEXT,
    "state": TEXT,
    "create_time": TEXT,
    "end_time": TEXT,
}

SCHEMAS: dict[str, Schema] = {
    "Error": record(
        {
            "error": {"type": "string", "description": "A bounded label: bad_request, unauthorized, not_found, ..."},
            "detail": {"type": "string", "description": "What was wrong and what is accepted, for a person."},
            "path": {"type": "string", "description": "Callbacks: where in the body the error is."},
            "rule": {"type": "string", "description": "Callbacks: the rule the body broke."},
        },
        optional=("path", "rule"),
    ),
    "SubscriberCreate": record(
        {"name": {"type": "string", "pattern": f"^{NAME.pattern}$"}, "secret": _SECRET, **_SUBSCRIBER_OPTIONS},
        optional=("secret", *(key for key in _SUBSCRIBER_OPTIONS if key != "url")),
    ),
    "SubscriberChange": record(dict(_SUBSCRIBER_OPTIONS), optional=tuple(_SUBSCRIBER_OPTIONS)),
    "SecretRotation": record({"secret": _SECRET}, optional=("secret",)),
    "Subscriber": record(_SHOWN_SUBSCRIBER),
    "SubscriberList": record({"items": {"type": "array", "items": ref("Subscriber")}}),
    "SubscriberSecrets": record(
        {"name": STRING, "secret": STRING, "previous_secret": TEXT, "previous_secret_expires_at": TEXT}
    ),
    "Removed": record({"removed": STRING, "cancelled_deliveries": WHOLE}),
    "Requeued": record({"requeued": WHOLE, "since": STRING}),
    "Delivery": record(_DELIVERY),
    "DeliveryDetail": record({**_DELIVERY, "attempts_log": {"type": "array", "items": _ATTEMPT}}),
    "DeliveryPage": page_of("Delivery"),
    "Job": record(_JOB),
    "JobDetail": record(
        {
            **_JOB,
            "detail": {"type": "object", "description": "The job's JobsDetail as COS sent it, typed."},
            "history": {
                "type": "array",
                "items": ref("JobState"),
                "maxItems": JOB_HISTORY,
                "description": f"The latest {JOB_HISTORY} states, oldest first.",
            },
            "history_next_cursor": {
                "type": ["string", "null"],
                "description": "Older states: GET /api/jobs/{job_id}/history?cursor=this (null: none).",
            },
            "confirmation": {
                "anyOf": [record(_CONFIRMATION), {"type": "null"}],
                "description": "For a COS source with confirm = true: whether COS confirmed this state (null: not"
                " asked).",
            },
        }
    ),
    "JobPage": page_of("Job"),
    "JobState": record(_JOB_HISTORY),
    "JobHistoryPage": page_of("JobState"),
    "WorkflowRunSummary": record(_RUN),
    "WorkflowRunPage": page_of("WorkflowRunSummary"),
    "WorkflowRun": record(
        {
            **_RUN,
            "create_time_raw": TEXT,
            "detail": {"type": "object", "description": "The run's WorkflowExecution as COS sent it, typed."},
            "tasks": {"type": "array", "items": record(_TASK)},
            "history": {"type": "array", "items": record(_HISTORY)},
        }
    ),
    "Callback": record(_CALLBACK),
    "CallbackPage": page_of("Callback"),
    "NonexistentJob": record(
        {
            "id": WHOLE,
            "job_id": STRING,
            "callback_id": {**WHOLE, "description": "The callback whose NonExistJobIds named it."},
            "received_at": {**STRING, "description": "When that callback arrived."},
        }
    ),
    "NonexistentJobPage": page_of("NonexistentJob"),
    "ConfirmationList": record(
        {
            "items": {
                "type": "array",
                "items": record(
                    {**_CONFIRMATION, "job_id": STRING, "state": STRING, "family": STRING, "created_at": STRING}
                ),
            }
        }
    ),
    "ConfirmDecision": record(
        {"callback_id": WHOLE, "decision": {"enum": ["release", "discard"]}, "deliveries": WHOLE}
    ),
    "Status": record({"status": STRING, "detail": STRING}, optional=("detail",)),
}


def _query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


_CURSOR = "The previous page's next_cursor (absent on the last page)."
PARAMETERS: dict[str, Schema] = {
    "limit": _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}, "Page size."),
    "cursor": _query("cursor", {"type": "string", "pattern": "^[0-9]{1,19}$"}, _CURSOR),
    "jobCursor": _query("cursor", {"type": "string", "pattern": "^[0-9]{1,19}(:[\\s\\S]*)?$"}, _CURSOR),
    "jobState": _query("state", {"enum": list(JOB_STATES)}, "Only jobs in this state (matched in any case)."),
    "runState": _query(
        "state", {"enum": list(WORKFLOW_STATES)}, "Only workflow runs in this state (matched in any case)."
    ),
    "outcome": _query(
        "outcome",
        {"enum": list(OUTCOME_FILTERS)},
        "Only callbacks with this outcome, or every refused one (rejected); matched in any case.",
    ),
    "deliveryState": _query(
        "state", {"enum": list(DELIVERY_STATES)}, "Only deliveries in this state (matched in any case)."
    ),
    "name": {"name": "name", "in": "path", "required": True, "schema": STRING, "description": "Subscriber name."},
    "deliveryId": {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    },
}

_ERROR_CONTENT = {"application/json": {"schema": ref("Error")}}
RESPONSES: dict[str, Schema] = {
    "BadRequest": {
        "description": "A parameter or field is not valid (each given at most once); the detail names what is"
        " accepted.",
        "content": _ERROR_CONTENT,
    },
    "Unauthorized": {
        "description": "No valid admin bearer token.",
        "headers": {"WWW-Authenticate": {"schema": {"const": "Bearer"}}},
        "content": _ERROR_CONTENT,
    },
    "NotFound": {
        "description": "Nothing has that name or id; the detail lists known names.",
        "content": _ERROR_CONTENT,
    },
    "Conflict": {"description": "The name is taken.", "content": _ERROR_CONTENT},
    "TooLarge": {"description": "The body is over the size limit.", "content": _ERROR_CONTENT},
    "Throttled": {
        "description": "Too many wrong tokens from this address (RELAY_GUESS_LIMIT): try again after Retry-After.",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
        "content": _ERROR_CONTENT,
    },
}

SECURITY_SCHEMES: dict[str, Schema] = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "RELAY_ADMIN_TOKEN (generated on first start if unset; `cos-relay tokens` prints it).",
    },
    "callbackToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "RELAY_CALLBACK_TOKEN, in the callback URL given to COS (`cos-relay tokens` prints it).",
    },
    "metricsToken": {"type": "http", "scheme": "bearer", "description": "RELAY_METRICS_TOKEN, when it is set."},
}
