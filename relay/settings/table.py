"""Gateway settings: one frozen value, and the one table every way of setting it is derived from.

Each field of `Settings` is declared with `setting(...)`: its default, the kind of value it takes, what it
means and, when it differs from the field name, its public name. From that one declaration come the
``cos-relay serve`` option (``--poll-interval``), the environment variable (``RELAY_POLL_INTERVAL``),
the parser both of them use, the check `Settings` itself applies, and the line in docs/configuration.md.

Adding a setting is adding one field here (a new kind of value also needs a `Kind` in
`relay.settings.kinds`), then ``python -m relay.cli.reference > docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from relay.domain.retry import DEFAULT_SCHEDULE
from relay.logs import LogFormat
from relay.settings.durations import Duration
from relay.settings.kinds import (
    HOSTS,
    NETWORKS,
    PROXIES,
    Choice,
    File,
    Flag,
    Integer,
    Kind,
    Schedule,
    Seconds,
    Text,
    Token,
    Url,
)
from relay.store.records import POSTGRES_SCHEMES, Durability, PostgresUrl, Target, target_of
from relay.store.sealing import read_keys

KIB = 1024
MIB = 1024 * 1024
DAY = 24 * 3600.0
ENV_PREFIX = "RELAY_"

T = TypeVar("T")

_SPEC = "relay.setting"


@dataclass(frozen=True)
class Database(File):
    """An SQLite file path, or a PostgreSQL URL (``postgresql://`` or ``postgres://``): a URL is never a path."""

    @property
    def metavar(self) -> str:
        return "FILE|URL"

    @property
    def form(self) -> str:
        return f"an SQLite file path or a PostgreSQL URL ({' or '.join(POSTGRES_SCHEMES)}...)"

    def convert(self, text: str) -> Any:
        target = target_of(text)
        return target if isinstance(target, PostgresUrl) else super().convert(text)

    def check(self, value: Any) -> None:
        if not isinstance(value, PostgresUrl):
            super().check(value)


@dataclass(frozen=True)
class KeyFile(File):
    """An existing file of secret keys (`relay.store.sealing`), read when given so a bad one stops the command."""

    exists: bool = True

    @property
    def form(self) -> str:
        return "the path of a file of keys (cos-relay secrets new-key)"

    def convert(self, text: str) -> Any:
        path = super().convert(text)
        read_keys(path)
        return path


@dataclass(frozen=True)
class _Spec:
    kind: Kind
    help: str
    name: str | None
    shown: str | None


def setting(default: T, kind: Kind, help: str, *, name: str | None = None, shown: str | None = None) -> T:
    """Declare a `Settings` field: its default, kind and meaning.

    ``name`` is the public name when it differs from the field's (``db`` for ``db_path``: ``--db`` and
    ``RELAY_DB``); ``shown`` describes a default that its value cannot (``None`` meaning "generated").
    """
    return dataclasses.field(default=default, metadata={_SPEC: _Spec(kind, help, name, shown)})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the app factory needs; tests build it directly, `cos-relay serve` from options."""

    host: str = setting("127.0.0.1", Text(), "Address to bind to.")
    port: int = setting(8080, Integer(0, 65535), "Port to bind to.")
    db_path: Target = setting(
        Path("cos-relay.db"),
        Database(),
        "SQLite database file, or a postgresql:// URL (for several replicas); `serve` creates the file or sets up"
        " the database (migrated), every other command needs it to exist.",
        name="db",
    )
    callback_token: str | None = setting(
        None,
        Token(),
        "Token COS must send as ?token=; at least 128 bits of randomness (`openssl rand -hex 32`), or refused.",
        shown="kept in the database, generated on first start",
    )
    admin_token: str | None = setting(
        None,
        Token(),
        "Bearer token for the JSON API (/api); the web console (/console/) asks for it at login. At least 128 bits"
        " of randomness, or refused.",
        shown="kept in the database, generated on first start",
    )
    callback_token_grace: float = setting(
        7 * DAY,
        Duration(zero=True, maximum=90 * DAY),
        "After `cos-relay tokens rotate --callback`, the previous callback token is still accepted this long (time"
        " to change the URL in the COS console); read by that command.",
    )
    console_session: float = setting(
        8 * 3600.0,
        Seconds(maximum=30 * DAY),
        "How long a web console login lasts (/console/); then the console asks for the admin token again.",
    )
    metrics_token: str | None = setting(
        None, Text(), "Bearer token /metrics requires (it names every subscriber).", shown="none: /metrics is open"
    )
    insecure_no_token: bool = setting(
        False, Flag(), "Accept callbacks without a token; logged loudly at every start. Never in production."
    )
    max_body: int = setting(
        10 * MIB,
        Integer(1, 1024 * MIB),
        "Largest callback body, in bytes; a larger one gets 413 while it is still arriving.",
    )
    body_timeout: float = setting(
        10.0,
        Seconds(),
        "A request head or body not finished arriving after this long gets 408; a client that takes none of an"
        " answer for this long is disconnected (slowloris guards).",
    )
    keepalive_timeout: float = setting(
        5.0,
        Seconds(),
        "An idle keep-alive connection is closed after this long without a new request (a load balancer in front"
        " should time out its idle connections sooner).",
    )
    max_head: int = setting(
        64 * KIB,
        Integer(KIB, MIB),
        "Largest request head (request line and headers), in bytes; a larger one gets 431. Each line may be at"
        " most 8 KiB of it.",
    )
    max_connections: int = setting(
        0,
        Integer(0, 1_000_000),
        "Open connections per process; at the cap a new one displaces the connection that has waited longest"
        " without a request in progress.",
        shown="0: derived from the open-file limit, which serve raises to its maximum",
    )
    forwarded_allow_ips: str = setting(
        "",
        PROXIES,
        "Addresses or networks (or *) of reverse proxies whose X-Forwarded-For is believed.",
        shown="none: no proxy is trusted",
    )
    allowed_hosts: str = setting(
        "",
        HOSTS,
        "Host header values the gateway answers (DNS rebinding guard); any other gets 400, except /healthz and"
        " /readyz.",
        shown="the host of RELAY_PUBLIC_URL (else --host), localhost, 127.0.0.1 and [::1]",
    )
    guess_limit: int = setting(
        10,
        Integer(0, 10_000),
        "Wrong tokens one source address may send per RELAY_GUESS_WINDOW at each check (console login, admin"
        " bearer, callback, metrics), per worker process; past it the address gets 429 with Retry-After, right token or"
        " not (0: no limit).",
    )
    guess_window: float = setting(
        60.0,
        Seconds(maximum=DAY),
        "The window of RELAY_GUESS_LIMIT: once throttled, an address may try again each RELAY_GUESS_LIMIT-th of it.",
    )
    durability: Durability = setting(
        "normal",
        Choice(("normal", "full")),
        "normal survives a process crash; full also survives power loss, at one fsync per commit.",
    )
    write_timeout: float = setting(
        5.0, Seconds(), "How long a write waits for a lock another process holds before the request gets 503."
    )
    pool_size: int = setting(
        10, Integer(1, 1000), "PostgreSQL only: connections per process (each replica and worker has its own pool)."
    )
    statement_timeout: float = setting(
        5.0,
        Seconds(),
        "PostgreSQL only: a statement, or a wait for a pooled connection, longer than this fails (503 to COS).",
    )
    public_url: str | None = setting(
        None, Url(), "Base URL COS reaches the gateway at, for the printed callback URL.", shown="http://HOST:PORT"
    )
    workers: int = setting(1, Integer(1, 64), "uvicorn worker processes.")
    quarantine_prefix: int = setting(4096, Integer(0, MIB), "How many bytes of a rejected body the quarantine keeps.")
    gateway_id: str = setting("cos-relay", Text(), "Names this gateway in each event's CloudEvents source.")
    retry_schedule: tuple[float, ...] = setting(
        DEFAULT_SCHEDULE,
        Schedule(),
        "How long to wait after each failed delivery attempt (5s,5m,2h or plain seconds); after the last, the"
        " delivery is dead.",
    )
    allow_networks: str = setting(
        "",
        NETWORKS,
        "Networks subscribers may be reached at although they are not public (SSRF allow-list).",
        shown="none",
    )
    disable_after: float = setting(
        5 * 24 * 3600.0,
        Seconds(maximum=365 * DAY),
        "A subscriber failing without a single success for this long is disabled.",
    )
    max_db_size: int | None = setting(
        None,
        Integer(MIB, 2**50),
        "Size bound of the database, in bytes (used: the file and its WAL less free pages; PostgreSQL: the"
        " database). From 80% the oldest raw callbacks, finished deliveries and events go early; at it, callbacks"
        " get 503 + Retry-After (docs/operations.md).",
        shown="none",
    )
    max_backlog: int = setting(
        100_000,
        Integer(1, 100_000_000),
        "Pending deliveries kept per subscriber (paused, disabled or failing): past this, its oldest become"
        ' dropped, counted in relay_deliveries_given_up_total{reason="backlog_full"} (docs/operations.md).',
    )
    secret_grace: float = setting(
        24 * 3600.0,
        Seconds(zero=True, maximum=30 * DAY),
        "After a secret rotation, the previous secret keeps signing this long.",
    )
    handshake_every: float = setting(
        24 * 3600.0,
        Seconds(maximum=30 * DAY),
        "How long a receiver's CloudEvents handshake grant holds before it is asked again (subscribers with"
        " handshake = true).",
    )
    delivery_capacity: int = setting(
        256, Integer(1, 10_000), "Deliveries in flight at once, over all subscribers (each also has its own limit)."
    )
    poll_interval: float = setting(
        1.0, Seconds(), "How often the delivery worker looks for work another process queued."
    )
    retention: float = setting(
        30 * DAY,
        Duration(forever=True),
        "Raw callbacks (accepted, duplicate, quarantined), finished deliveries with their attempts, and events no"
        " delivery still needs are removed once older than this (forever: never). A delivery still owed never is.",
    )
    job_retention: float = setting(
        90 * DAY,
        Duration(forever=True),
        "Job and workflow records (latest state, state history, NonExistJobIds) are removed once older than this"
        " (forever: never).",
    )
    prune_interval: float = setting(
        3600.0,
        Duration(maximum=DAY),
        "How often the background pruner applies the two retention windows (in small batches).",
    )
    secret_key_file: Path | None = setting(
        None,
        KeyFile(),
        "File of keys (one a line, the first seals) that the tokens, the console's session key and subscribers'"
        " signing secrets are encrypted under in the database; keep it outside the database and its backups.",
        shown="none: secrets are stored in clear (warned at every start)",
    )
    config_path: Path | None = setting(
        None, File(exists=True), "TOML file of [[subscribers]], applied at every start.", name="config", shown="none"
    )
    log_level: str = setting(
        "info",
        Choice(("debug", "info", "warning", "error", "critical")),
        "Python log level; each accepted callback and successful delivery is logged at debug.",
    )
    log_format: LogFormat = setting(
        "text",
        Choice(("text", "json")),
        "json: one object per line with job_id, event_id, subscriber and outcome; never bodies or secrets.",
    )

    def __post_init__(self) -> None:
        for entry in SETTINGS:
            try:
                entry.check(getattr(self, entry.field))
            except ValueError as error:
                raise ValueError(f"{entry.field}: {error}") from None

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Setting:
    """One row of the table: a `Settings` field with its option, environment variable and parser."""

    field: str
    name: str
    default: Any
    kind: Kind
    help: str
    shown: str | None

    @classmethod
    def of(cls, field: dataclasses.Field[Any]) -> Setting:
        spec: _Spec | None = field.metadata.get(_SPEC)
        if spec is None:
            raise TypeError(f"Settings.{field.name} must be declared with setting(...): it has no table entry")
        return cls(field.name, spec.name or field.name, field.default, spec.kind, spec.help, spec.shown)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        return "" if self.default is None else self.kind.show(self.default)

    @property
    def optional(self) -> bool:
        return self.default is None

    def parse(self, text: str) -> Any:
        """The value ``text`` (from an option or the environment) stands for; ValueError says why not."""
        return self.kind.parse(text)

    def check(self, value: Any) -> None:
        if value is None and self.optional:
            return
        self.kind.check(value)


#: Every setting, in the order ``--help`` and the reference list them.
SETTINGS: tuple[Setting, ...] = tuple(Setting.of(field) for field in dataclasses.fields(Settings))


def setting_named(field: str) -> Setting:
    """The table row of the `Settings` field ``field``."""
    for entry in SETTINGS:
        if entry.field == field:
            return entry
    raise KeyError(field)
