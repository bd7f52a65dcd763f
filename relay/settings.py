"""Gateway settings: one frozen value, built from CLI options or ``RELAY_*`` environment variables."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from relay import numbers
from relay.deliver.retry import DEFAULT_SCHEDULE, check_schedule, parse_schedule

Durability = Literal["normal", "full"]

MIB = 1024 * 1024
DAY = 24 * 3600.0

# What each numeric setting accepts, from the environment or the command line (wider is a typo).
PORTS = (1, 65535)
MAX_BODIES = (1, 1024 * MIB)
WORKERS = (1, 64)
#: Body, write and poll timeouts: above 0, at most an hour.
WAITS = (0.0, 3600.0)
DISABLE_AFTER = (0.0, 365 * DAY)
SECRET_GRACE = (0.0, 30 * DAY)
DELIVERY_CAPACITY = (1, 10_000)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the app factory needs; tests build it directly, `cos-relay serve` from options."""

    #: Address uvicorn binds to.
    host: str = "127.0.0.1"
    port: int = 8080
    #: The SQLite database file (created, migrated and put in WAL mode on start).
    db_path: Path = Path("cos-relay.db")
    #: Token COS must send as ``?token=``; ``None`` means "load or generate one" (see `relay.tokens`).
    callback_token: str | None = None
    #: Bearer token for the JSON API; ``None`` means "load or generate one".
    admin_token: str | None = None
    #: Accept callbacks without a token. Only with an explicit flag, and logged loudly.
    insecure_no_token: bool = False
    #: Bodies larger than this are refused with 413 while streaming, before parsing.
    max_body: int = 10 * MIB
    #: A body that has not finished arriving after this many seconds gets 408 (slowloris guard).
    body_timeout: float = 10.0
    #: ``normal`` survives a process crash; ``full`` also survives power loss (fsync per commit).
    durability: Durability = "normal"
    #: How long a write waits for a lock another process holds before the request gets 503.
    write_timeout: float = 5.0
    #: Base URL printed in the callback URL hint; defaults to ``http://host:port``.
    public_url: str | None = None
    #: Number of uvicorn worker processes.
    workers: int = 1
    #: How much of a rejected body the quarantine keeps.
    quarantine_prefix: int = 4096
    #: Names this gateway in each event's CloudEvents ``source``.
    gateway_id: str = "cos-relay"
    #: Seconds to wait after each failed delivery attempt; after the last, the delivery is dead.
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    #: Networks subscribers may resolve to although they are not public (``127.0.0.0/8,10.1.0.0/16``).
    allow_networks: str = ""
    #: A subscriber failing without a single success for this long is disabled (default 5 days).
    disable_after: float = 5 * 24 * 3600.0
    #: After a secret rotation, the previous secret keeps signing for this long (default 24 h).
    secret_grace: float = 24 * 3600.0
    #: Deliveries in flight at once, over all subscribers (each also has its own limit).
    delivery_capacity: int = 256
    #: How often the worker looks for work another process queued (it is woken for its own).
    poll_interval: float = 1.0
    #: Declarative subscribers (TOML), applied at start.
    config_path: Path | None = None

    def __post_init__(self) -> None:
        if self.max_body <= 0:
            raise ValueError("max_body must be positive")
        if self.body_timeout <= 0:
            raise ValueError("body_timeout must be positive")
        if self.durability not in ("normal", "full"):
            raise ValueError("durability must be 'normal' or 'full'")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        check_schedule(self.retry_schedule)
        if self.delivery_capacity < 1 or self.poll_interval <= 0:
            raise ValueError("delivery_capacity and poll_interval must be positive")

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the ``RELAY_*`` variables; unset or empty ones keep their defaults."""
        values: dict[str, object] = {}
        for variable, (name, convert) in ENVIRONMENT.items():
            raw = environ.get(variable, "")
            if raw != "":
                try:
                    values[name] = convert(raw)
                except ValueError as exc:
                    raise ValueError(f"{variable}: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]


def _whole(bounds: tuple[int, int]) -> Callable[[str], int]:
    return lambda raw: numbers.whole(raw, *bounds)


def _wait(bounds: tuple[float, float]) -> Callable[[str], float]:
    """Seconds above the lower bound (a zero timeout or interval means nothing works)."""
    return lambda raw: numbers.decimal(raw, *bounds, above_low=True)


def _seconds(bounds: tuple[float, float]) -> Callable[[str], float]:
    return lambda raw: numbers.decimal(raw, *bounds)


def _flag(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


#: Environment variable -> (settings field, converter). The CLI options use the same names.
ENVIRONMENT: dict[str, tuple[str, Callable[[str], object]]] = {
    "RELAY_HOST": ("host", str),
    "RELAY_PORT": ("port", _whole(PORTS)),
    "RELAY_DB": ("db_path", Path),
    "RELAY_CALLBACK_TOKEN": ("callback_token", str),
    "RELAY_ADMIN_TOKEN": ("admin_token", str),
    "RELAY_INSECURE_NO_TOKEN": ("insecure_no_token", _flag),
    "RELAY_MAX_BODY": ("max_body", _whole(MAX_BODIES)),
    "RELAY_BODY_TIMEOUT": ("body_timeout", _wait(WAITS)),
    "RELAY_DURABILITY": ("durability", str),
    "RELAY_WRITE_TIMEOUT": ("write_timeout", _wait(WAITS)),
    "RELAY_PUBLIC_URL": ("public_url", str),
    "RELAY_WORKERS": ("workers", _whole(WORKERS)),
    "RELAY_GATEWAY_ID": ("gateway_id", str),
    "RELAY_RETRY_SCHEDULE": ("retry_schedule", parse_schedule),
    "RELAY_ALLOW_NETWORKS": ("allow_networks", str),
    "RELAY_DISABLE_AFTER": ("disable_after", _wait(DISABLE_AFTER)),
    "RELAY_SECRET_GRACE": ("secret_grace", _seconds(SECRET_GRACE)),
    "RELAY_DELIVERY_CAPACITY": ("delivery_capacity", _whole(DELIVERY_CAPACITY)),
    "RELAY_POLL_INTERVAL": ("poll_interval", _wait(WAITS)),
    "RELAY_CONFIG": ("config_path", Path),
}
