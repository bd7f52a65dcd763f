"""Gateway settings: one frozen value, built from CLI options or ``RELAY_*`` environment variables."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from relay.deliver.retry import DEFAULT_SCHEDULE, parse_schedule

Durability = Literal["normal", "full"]

KIB = 1024
MIB = 1024 * 1024


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
    #: Bearer token /metrics requires; ``None`` leaves /metrics open (it names every subscriber).
    metrics_token: str | None = None
    #: Accept callbacks without a token. Only with an explicit flag, and logged loudly.
    insecure_no_token: bool = False
    #: Bodies larger than this are refused with 413 while streaming, before parsing.
    max_body: int = 10 * MIB
    #: A body that has not finished arriving after this many seconds gets 408 (slowloris guard).
    body_timeout: float = 10.0
    #: An idle keep-alive connection is closed after this many seconds without a new request (a load balancer
    #: in front should time out its idle connections sooner).
    keepalive_timeout: float = 5.0
    #: A request head (request line and headers) larger than this is refused with 431; each line may be at
    #: most 8 KiB of it.
    max_head: int = 64 * KIB
    #: Open connections per process; at the cap, a new connection displaces the one that has waited longest
    #: without a request in progress. 0: derived from the open-file limit (which `serve` raises to its maximum).
    max_connections: int = 0
    #: Addresses (or networks, or ``*``) of reverse proxies whose ``X-Forwarded-For`` is believed; none by default.
    forwarded_allow_ips: str = ""
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
        if self.keepalive_timeout <= 0:
            raise ValueError("keepalive_timeout must be positive")
        if self.max_head < KIB:
            raise ValueError("max_head must be at least 1024 bytes")
        if self.max_connections < 0:
            raise ValueError("max_connections must be 0 (automatic) or positive")
        parse_forwarded_allow_ips(self.forwarded_allow_ips)
        if self.durability not in ("normal", "full"):
            raise ValueError("durability must be 'normal' or 'full'")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not self.retry_schedule:
            raise ValueError("retry_schedule needs at least one delay")
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
                values[name] = convert(raw)
        return cls(**values)  # type: ignore[arg-type]


def parse_forwarded_allow_ips(raw: str) -> list[str]:
    """``10.0.0.1,10.1.0.0/16`` (or ``*``) as a list, refusing anything that is not an address or network."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    for item in items:
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"forwarded_allow_ips: {item!r} is not an IP address or network") from None
    return items


def _flag(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


#: Environment variable -> (settings field, converter). The CLI options use the same names.
ENVIRONMENT: dict[str, tuple[str, Callable[[str], object]]] = {
    "RELAY_HOST": ("host", str),
    "RELAY_PORT": ("port", int),
    "RELAY_DB": ("db_path", Path),
    "RELAY_CALLBACK_TOKEN": ("callback_token", str),
    "RELAY_ADMIN_TOKEN": ("admin_token", str),
    "RELAY_METRICS_TOKEN": ("metrics_token", str),
    "RELAY_INSECURE_NO_TOKEN": ("insecure_no_token", _flag),
    "RELAY_MAX_BODY": ("max_body", int),
    "RELAY_BODY_TIMEOUT": ("body_timeout", float),
    "RELAY_KEEPALIVE_TIMEOUT": ("keepalive_timeout", float),
    "RELAY_MAX_HEAD": ("max_head", int),
    "RELAY_MAX_CONNECTIONS": ("max_connections", int),
    "RELAY_FORWARDED_ALLOW_IPS": ("forwarded_allow_ips", str),
    "RELAY_DURABILITY": ("durability", str),
    "RELAY_WRITE_TIMEOUT": ("write_timeout", float),
    "RELAY_PUBLIC_URL": ("public_url", str),
    "RELAY_WORKERS": ("workers", int),
    "RELAY_GATEWAY_ID": ("gateway_id", str),
    "RELAY_RETRY_SCHEDULE": ("retry_schedule", parse_schedule),
    "RELAY_ALLOW_NETWORKS": ("allow_networks", str),
    "RELAY_DISABLE_AFTER": ("disable_after", float),
    "RELAY_SECRET_GRACE": ("secret_grace", float),
    "RELAY_DELIVERY_CAPACITY": ("delivery_capacity", int),
    "RELAY_POLL_INTERVAL": ("poll_interval", float),
    "RELAY_CONFIG": ("config_path", Path),
}
