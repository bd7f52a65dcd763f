"""Ordered, append-only schema steps for the SQLite store. Never edit an applied step: add one."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("relay")


@migrations()
def m001_callbacks_and_jobs(db: Database) -> None:
    # Every body that reached the endpoint past auth and the size cap: accepted, duplicate or quarantined.
    db.table("callbacks").create(
        {
            "id": int,
            "received_at": str,  # ISO-8601 UTC
            "source_addr": str,
            "content_type": str,
            "format": str,  # xml | json | unknown
            "size": int,
            "event_name": str,
            "outcome": str,  # accepted | duplicate | malformed | invalid | unsupported_type
            "reason": str,  # why it was rejected (NULL when accepted)
            "error_path": str,
            "dedup_key": str,  # the items' keys, space-separated
            "body": bytes,  # whole body when accepted; a bounded prefix when quarantined
            "body_truncated": int,
        },
        pk="id",
    )
    db.table("callbacks").create_index(["outcome", "id"])
    db.create_view(
        "quarantine",
        "SELECT * FROM callbacks WHERE outcome NOT IN ('accepted', 'duplicate')",
    )
    # The dedup ledger: one row per job state, workflow state or NonExistJobIds set ever accepted.
    db.table("items").create(
        {
            "dedup_key": str,
            "kind": str,  # job | workflow | nonexistent
            "subject": str,  # JobId or RunId
            "state": str,
            "callback_id": int,
            "received_at": str,
        },
        pk="dedup_key",
        foreign_keys=[("callback_id", "callbacks", "id")],
    )
    db.table("jobs").create(
        {
            "job_id": str,
            "state": str,
            "tag": str,
            "queue_id": str,
            "code": str,
            "message": str,
            "bucket": str,
            "object_key": str,
            "region": str,
            "workflow_run_id": str,
            "creation_time": str,  # UTC; *_raw keeps what COS sent
            "creation_time_raw": str,
            "start_time": str,
            "start_time_raw": str,
            "end_time": str,
            "end_time_raw": str,
            "detail": str,  # typed JSON of the JobsDetail
            "first_seen_at": str,
            "updated_at": str,
            "callback_id": int,  # the callback that set the current state; orders "newest first"
        },
        pk="job_id",
    )
    for columns in (
        ["callback_id"],
        ["state", "callback_id"],
        ["tag", "callback_id"],
        ["queue_id", "callback_id"],
    ):
        db.table("jobs").create_index(columns)
    db.table("job_states").create(
        {
            "id": int,
            "job_id": str,
            "state": str,
            "code": str,
            "message": str,
            "end_time": str,
            "end_time_raw": str,
            "received_at": str,
            "callback_id": int,
        },
        pk="id",
        foreign_keys=[("callback_id", "callbacks", "id")],
    )
    db.table("job_states").create_index(["job_id", "id"])
    db.table("workflow_runs").create(
        {
            "run_id": str,
            "workflow_id": str,
            "workflow_name": str,
            "state": str,
            "bucket": str,
            "object_key": str,
            "create_time": str,
            "create_time_raw": str,
            "detail": str,
            "first_seen_at": str,
            "updated_at": str,
            "callback_id": int,
        },
        pk="run_id",
    )
    db.table("workflow_states").create(
        {"id": int, "run_id": str, "state": str, "received_at": str, "callback_id": int},
        pk="id",
        foreign_keys=[("callback_id", "callbacks", "id")],
    )
    db.table("workflow_states").create_index(["run_id", "id"])
    db.table("workflow_tasks").create(
        {
            "run_id": str,
            "position": int,
            "job_id": str,
            "type": str,
            "name": str,
            "state": str,
            "create_time": str,
            "end_time": str,
            "detail": str,
        },
        pk=("run_id", "position"),
    )
    db.table("workflow_tasks").create_index(["job_id"])
    db.table("nonexistent_job_ids").create(
        {"id": int, "job_id": str, "callback_id": int, "received_at": str},
        pk="id",
        foreign_keys=[("callback_id", "callbacks", "id")],
    )
    db.table("nonexistent_job_ids").create_index(["job_id"])
    # Generated tokens live here so a restart keeps the callback URL that was pasted into COS.
    db.table("secrets").create({"name": str, "value": str, "created_at": str}, pk="name")
    # /readyz writes this one row: only a real write shows a read-only file or a full disk.
    db.table("heartbeat").create({"id": int, "at": str}, pk="id")


@migrations()
def m002_outbox(db: Database) -> None:
    db.table("subscribers").create(
        {
            "id": int,
            "name": str,
            "url": str,
            "secret": str,
            "previous_secret": str,  # still signed with until previous_secret_expires_at (rotation grace)
            "previous_secret_expires_at": str,
            "types": str,  # JSON list of event type patterns
            "filters": str,  # JSON object: tag, state, queue_id, bucket, object_prefix
            "state": str,  # enabled | paused | disabled
            "disabled_reason": str,
            "failing_since": str,  # start of the current unbroken run of failures
            "max_in_flight": int,
            "timeout": float,
            "retry_schedule": str,  # JSON list of seconds, NULL for the gateway's
            "source": str,  # cli | api | config
            "created_at": str,
            "updated_at": str,
            "removed_at": str,  # removed rows stay: their deliveries still point at them
        },
        pk="id",
    )
    db.execute("CREATE UNIQUE INDEX subscribers_live_name ON subscribers(name) WHERE removed_at IS NULL")
    # Events are written in the transaction that accepts the callback (transactional outbox).
    db.table("events").create(
        {
            "id": str,  # deterministic from item_key
            "item_key": str,
            "type": str,
            "subject": str,
            "callback_id": int,
            "created_at": str,
            "body": bytes,  # the serialized CloudEvent, sent as is on every attempt
        },
        pk="id",
        foreign_keys=[("callback_id", "callbacks", "id")],
    )
    db.table("deliveries").create(
        {
            "id": int,
            "event_id": str,
            "subscriber_id": int,
            "state": str,  # pending | in_flight | delivered | dead | cancelled
            "attempts": int,  # every attempt ever made
            "failures": int,  # failed attempts since it was last queued; indexes the retry schedule
            "next_attempt_at": str,
            "lease_expires_at": str,  # in_flight only: after this, another worker may take it over
            "last_outcome": str,
            "last_status": int,
            "created_at": str,
            "updated_at": str,
            "delivered_at": str,
        },
        pk="id",
        foreign_keys=[("event_id", "events", "id"), ("subscriber_id", "subscribers", "id")],
    )
    db.table("deliveries").create_index(["event_id", "subscriber_id"], unique=True)
    db.table("deliveries").create_index(["subscriber_id", "state", "next_attempt_at"])
    # (subscriber_id, state) is also ordered by id: the head of a strict-order queue, in-flight counts.
    db.table("deliveries").create_index(["subscriber_id", "state"])
    db.table("deliveries").create_index(["state", "next_attempt_at"])
    db.table("attempts").create(
        {
            "id": int,
            "delivery_id": int,
            "started_at": str,
            "duration": float,
            "outcome": str,
            "status": int,
            "error": str,
            "response_body": bytes,  # bounded prefix
            "trigger": str,  # first | retry | manual
        },
        pk="id",
        foreign_keys=[("delivery_id", "deliveries", "id")],
    )
    db.table("attempts").create_index(["delivery_id", "id"])


@migrations()
def m003_outbox_age_index(db: Database) -> None:
    # The oldest unfinished delivery per state, read at every metrics scrape.
    db.table("deliveries").create_index(["state", "created_at"])


@migrations()
def m004_deliveries_active_indexes(db: Database) -> None:
    # A callback fanned out to N subscribers adds one row to each subscriber's part of every index that starts
    # with subscriber_id: N scattered leaf pages per index. Indexes holding only pending or in-flight rows stay
    # small while subscribers keep up, so those N entries share a few pages (`python -m bench.fanout`: at 1,000
    # subscribers the ack fell from 36 to 14 ms at the median). One full index by subscriber is kept, for listing
    # and recovery.
    db.execute("DROP INDEX IF EXISTS idx_deliveries_subscriber_id_state")
    db.execute("DROP INDEX IF EXISTS idx_deliveries_subscriber_id_state_next_attempt_at")
    db.execute("CREATE INDEX deliveries_by_subscriber ON deliveries(subscriber_id)")
    # Due work per subscriber, and the head of a strict-order queue (ordered by id).
    db.execute(
        "CREATE INDEX deliveries_pending_due ON deliveries(subscriber_id, next_attempt_at) WHERE state = 'pending'"
    )
    db.execute("CREATE INDEX deliveries_pending_order ON deliveries(subscriber_id) WHERE state = 'pending'")
    # Lanes busy per subscriber, leases to reclaim, the head of a strict-order queue (a few rows each).
    db.execute("CREATE INDEX deliveries_in_flight ON deliveries(subscriber_id) WHERE state = 'in_flight'")


@migrations()
def m005_retention(db: Database) -> None:
    # Pruning deletes callbacks in id order. Every table with a foreign key to callbacks needs an index on it:
    # without one, SQLite checks each deleted callback against the whole child table. callback_id only grows,
    # so each index takes its new entry at its right edge.
    for table in ("items", "job_states", "workflow_states", "nonexistent_job_ids", "events", "workflow_runs"):
        db.execute(f"CREATE INDEX {table}_by_callback ON {table}(callback_id)")
    # When a prune batch last committed (read at every scrape: the alert on a prune that stopped succeeding).
    db.table("maintenance").create({"name": str, "at": str}, pk="name")


@migrations()
def m006_console_indexes(db: Database) -> None:
    # The console's job page lists every delivery of a job's events: events by subject (the JobId).
    db.execute("CREATE INDEX IF NOT EXISTS events_by_subject ON events(subject)")
    # The overview counts callbacks per minute over the last hour (a range of received_at, not the table), and
    # finds where the last day starts in callback ids (jobs are then a range of their callback_id index).
    db.execute("CREATE INDEX IF NOT EXISTS callbacks_by_time ON callbacks(received_at, outcome)")


@migrations()
def m007_packed_bodies(db: Database) -> None:
    # Raw callback bodies, event bodies and job details are zlib-compressed from here on (relay/store/
    # packing.py); a flag per row, so rows written before stay readable as they are, and no rewrite is needed.
    for table, column in (("callbacks", "body_packed"), ("events", "body_packed"), ("jobs", "detail_packed")):
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")


@migrations()
def m008_body_refs(db: Database) -> None:
    # A duplicate byte for byte like a body already kept stores a reference to it, not a second copy: a
    # replayed callback costs a small row, not its body again. The hash finds the first copy; only rows that
    # hold a whole body of their own have a hash (and are in its index).
    db.execute("ALTER TABLE callbacks ADD COLUMN body_sha256 BLOB")
    db.execute("ALTER TABLE callbacks ADD COLUMN body_ref INTEGER")
    db.execute("CREATE INDEX callbacks_by_body ON callbacks(body_sha256) WHERE body_sha256 IS NOT NULL")


@migrations()
def m009_store_response(db: Database) -> None:
    # Whether a subscriber's answers are kept (their first 4 KiB, with each attempt): off unless asked for, for
    # subscribers made before too. An answer can carry whatever the subscriber put in it.
    db.execute("ALTER TABLE subscribers ADD COLUMN store_response INTEGER NOT NULL DEFAULT 0")


@migrations()
def m010_tokens_and_sessions(db: Database) -> None:
    # A rotated callback token is still accepted for a while: kept as previous_callback_token until expires_at.
    db.execute("ALTER TABLE secrets ADD COLUMN expires_at TEXT")
    # Where the token in force came from at the last start or rotation (database, RELAY_ADMIN_TOKEN, an option)
    # and its SHA-256: `cos-relay tokens` shows only the one in force, and a changed admin token ends sessions.
    db.table("token_sources").create({"name": str, "source": str, "fingerprint": str, "recorded_at": str}, pk="name")
    # Console sessions live here, so that signing out or `cos-relay sessions end-all` ends them on every replica.
    # id: the SHA-256 of the cookie's random part (the cookie cannot be rebuilt from a copy of the database).
    db.table("console_sessions").create({"id": str, "created_at": str, "expires_at": str}, pk="id")
    db.table("console_sessions").create_index(["expires_at"])


@migrations()
def m011_reconcile_runs(db: Database) -> None:
    # When each COS source's reconciliation last started: replicas claim a run with a conditional update, so a
    # source is listed once an interval however many replicas there are (relay.maintenance.reconciling).
    db.table("reconcile_runs").create({"source": str, "started_at": str}, pk="source")


@migrations()
def m012_jobs_in_flight(db: Database) -> None:
    # The jobs COS has not finished, as each source's last reconciliation saw them (replaced at every run).
    db.table("jobs_in_flight").create(
        {"source": str, "job_id": str, "state": str, "tag": str, "created": str, "seen_at": str},
        pk=("source", "job_id"),
    )


@migrations()
def m013_job_state_ref(db: Database) -> None:
    # A job's current Code and Message are kept once, in its history: the job's row names the history row of its
    # current state, and its detail leaves them out (relay/store/detail.py). Rows written before keep their own
    # copies (state_id NULL) and are read as they are; a job's next state rewrites its row in the new shape.
    db.execute("ALTER TABLE jobs ADD COLUMN state_id INTEGER")


@migrations()
def m014_confirmations(db: Database) -> None:
    # Jobs a callback brought for a COS source with confirm = true, read back from COS before their events go out
    # (relay.cos.confirming): one row per job state (its dedup key), waiting until COS answered. While a row
    # waits, its event's deliveries are 'confirming' (never claimed); 'unconfirmed' when COS did not confirm it.
    db.table("confirmations").create(
        {
            "item_key": str,
            "callback_id": int,
            "job_id": str,
            "state": str,
            "source": str,
            "family": str,
            "status": str,  # waiting | confirmed | unconfirmed | released | discarded
            "reason": str,  # nonexistent | state_differs (unconfirmed only)
            "seen": str,  # the state COS has, when it differs
            "created_at": str,
            "checked_at": str,
        },
        pk="item_key",
    )
    db.execute("CREATE INDEX confirmations_waiting ON confirmations(source, created_at) WHERE status = 'waiting'")
    db.execute("CREATE INDEX confirmations_by_callback ON confirmations(callback_id)")
    db.execute("CREATE INDEX confirmations_by_job ON confirmations(job_id)")
    # The callback's own summary, for listings: NULL (nothing to confirm), waiting, confirmed, unconfirmed,
    # released or discarded (an admin's decision on an unconfirmed one).
    db.execute("ALTER TABLE callbacks ADD COLUMN confirmation TEXT")


@migrations()
def m015_cos_queues(db: Database) -> None:
    # Each COS source's queues as its last reconciliation's queue check saw them (replaced at every check), for
    # the console's overview: state, where the callback points (without its token), whether that is here.
    db.table("cos_queues").create(
        {
            "source": str,
            "queue_id": str,
            "family": str,
            "name": str,
            "state": str,
            "callback": str,  # the callback URL without its query (the token), or "off"
            "here": int,
            "checked_at": str,
        },
        pk=("source", "queue_id"),
    )


@migrations()
def m016_destinations(db: Database) -> None:
    # A subscriber's kind (webhook, a chat robot, a broker) and its receiver's limits. Existing subscribers are
    # webhooks in structured mode with no rate: today's behaviour.
    db.execute("ALTER TABLE subscribers ADD COLUMN kind TEXT NOT NULL DEFAULT 'webhook'")
    db.execute("ALTER TABLE subscribers ADD COLUMN rate TEXT")
    db.execute("ALTER TABLE subscribers ADD COLUMN handshake INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE subscribers ADD COLUMN content_mode TEXT NOT NULL DEFAULT 'structured'")
    db.execute("ALTER TABLE subscribers ADD COLUMN template TEXT")
    # When each rate-limited subscriber's next delivery may start (the pacing of its rate), shared by every worker
    # and replica through the database.
    db.table("rate_pacing").create({"subscriber_id": int, "free_at": str}, pk="subscriber_id")
    # The CloudEvents handshake's verdict per subscriber and URL: granted or refused, the rate the receiver
    # allowed, and until when it holds (re-validated after).
    db.table("handshakes").create(
        {
            "subscriber_id": int,
            "url": str,
            "granted": int,
            "allowed_rate": str,
            "detail": str,
            "checked_at": str,
            "expires_at": str,
        },
        pk="subscriber_id",
    )


@migrations()
def m017_event_log(db: Database) -> None:
    # The lazy outbox (docs/design/lazy-outbox.md): the events are an ordered log. position is strictly increasing
    # in commit order (one writer: the next is max + 1); events recorded before keep NULL and are served through
    # their delivery rows. The attributes filters look at are kept with the event, so a filter can be checked
    # without inflating a body it will not send (the object key's first OBJECT_KEY_KEPT characters: a prefix
    # filter needs no more, and a hostile sender's long key is not stored twice).
    db.execute("ALTER TABLE events ADD COLUMN position INTEGER")
    for column in ("tag", "state", "queue_id", "bucket", "object_key"):
        db.execute(f"ALTER TABLE events ADD COLUMN {column} TEXT")
    db.execute("CREATE UNIQUE INDEX events_by_position ON events(position) WHERE position IS NOT NULL")
    # The highest position retention removed: the log's head never goes back (the next event would take a position
    # again, below cursors that passed it). One row, written by pruning only.
    db.table("log_floor").create({"id": int, "position": int}, pk="id")
    db.execute("INSERT INTO log_floor(id, position) VALUES (1, 0)")
    # Each subscriber's place in the log: every matching event at a position <= acked is finished for it (or has
    # a delivery row), the ones up to leased are out with workers (leases), the ones after are pending. A
    # subscriber added later starts at the log's head; one of before this step at 0 (owed no event of it yet).
    db.table("cursors").create(
        {"subscriber_id": int, "acked": int, "leased": int, "updated_at": str}, pk="subscriber_id"
    )
    db.execute(
        "INSERT INTO cursors(subscriber_id, acked, leased, updated_at)"
        " SELECT id, 0, 0, updated_at FROM subscribers WHERE removed_at IS NULL"
    )
    # Retention asks whether any cursor is behind an event: a range of this index, stopped at the first.
    db.execute("CREATE INDEX cursors_by_acked ON cursors(acked)")
    # A range (after_position, last_position] of a subscriber's log out with a worker until expires_at, with
    # `outstanding` of its events not finished yet; the cursor's acked moves over the ranges finished from its start.
    db.table("leases").create(
        {
            "token": str,
            "subscriber_id": int,
            "after_position": int,
            "last_position": int,
            "outstanding": int,
            "expires_at": str,
        },
        pk="token",
    )
    db.execute("CREATE INDEX leases_by_subscriber ON leases(subscriber_id, after_position)")
    # A subscriber's filter in force from a position of the log on: a changed filter applies from the log's head
    # at the change, so a subscriber behind is owed what it was owed when each event was recorded.
    db.table("filters").create(
        {"subscriber_id": int, "from_position": int, "types": str, "filters": str},
        pk=("subscriber_id", "from_position"),
    )
    db.execute(
        "INSERT INTO filters(subscriber_id, from_position, types, filters)"
        " SELECT id, 0, types, filters FROM subscribers WHERE removed_at IS NULL"
    )
    # Ranges of a subscriber's log given up in bulk ('dropped' by backlog shedding, 'cancelled' by removal).
    db.table("gaps").create(
        {"subscriber_id": int, "from_position": int, "to_position": int, "reason": str, "at": str},
        pk=("subscriber_id", "from_position"),
    )
    # Every attempt is known by its subscriber and event too: one of a delivery with no row (delivered in order from
    # the log) by them alone, found through its event.
    db.execute("ALTER TABLE attempts ADD COLUMN subscriber_id INTEGER")
    db.execute("ALTER TABLE attempts ADD COLUMN event_id TEXT")
    db.execute("CREATE INDEX attempts_of_the_log ON attempts(event_id, subscriber_id) WHERE delivery_id IS NULL")
    # A delivery delivered in order is its attempt: it goes past the raw window like a finished row.
    db.execute("CREATE INDEX attempts_of_the_log_by_age ON attempts(started_at) WHERE delivery_id IS NULL")


@migrations()
def m018_attempts_by_position(db: Database) -> None:
    # The attempts of the log are found by their event's position, not its id. An event id is random, so an index
    # on it takes each insert to a random page: 8.7 µs a row on an empty table and 31.5 at half a million rows,
    # against 5.5 and 6.5 for a position, which only grows (`python -m bench.attempts_index`).
    db.execute("ALTER TABLE attempts ADD COLUMN position INTEGER")
    db.execute(
        "UPDATE attempts SET position = (SELECT e.position FROM events e WHERE e.id = attempts.event_id)"
        " WHERE delivery_id IS NULL"
    )
    db.execute("DROP INDEX attempts_of_the_log")
    db.execute("CREATE INDEX attempts_of_the_log ON attempts(position, subscriber_id) WHERE delivery_id IS NULL")
    # A delivery's own attempts: the log's have no delivery id, and in this index they cost every insert a write and
    # led the planner to answer "delivery_id IS NULL" through it, reading every attempt of the log.
    db.execute("DROP INDEX idx_attempts_delivery_id_id")
    db.execute("CREATE INDEX idx_attempts_delivery_id_id ON attempts(delivery_id, id) WHERE delivery_id IS NOT NULL")


@migrations()
def m019_handed_back_leases(db: Database) -> None:
    # A range handed back unattempted (its lane stopped at a failure, or its worker was stopping) says so: the claim
    # that takes it over sends its events as first attempts. Only a range whose worker died may have been sent.
    db.execute("ALTER TABLE leases ADD COLUMN handed_back INTEGER NOT NULL DEFAULT 0")
