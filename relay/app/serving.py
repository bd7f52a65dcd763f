"""Running the app under uvicorn: in this process, or in worker processes handed the settings explicitly.

Worker processes are spawned (a fresh interpreter each), so everything they need travels as the pickled
arguments of `worker_app`: the settings, the tokens already resolved and the metrics directory. Nothing
goes through ``os.environ``.
"""

from __future__ import annotations

import functools
import gc
import logging
import tempfile
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from relay import logs
from relay.app.factory import create_app
from relay.cos.sources import CosSource
from relay.deliver.ssrf import AddressPolicy
from relay.domain.clock import utc_now
from relay.http.auth import Credentials, resolve_credentials
from relay.metrics.files import count_into
from relay.outbox.config import apply_config
from relay.outbox.config_file import read_config, read_cos_sources
from relay.outbox.destinations import vet_destination
from relay.outbox.service import Subscribers
from relay.receive.capacity import ConnectionCap, connection_cap, raise_open_file_limit
from relay.receive.protocol import BoundedProtocol, ConnectionLimits
from relay.settings.kinds import parse_proxies
from relay.settings.table import KIB, Settings
from relay.store import store_for
from relay.store.sealing import Sealer

logger = logging.getLogger(__name__)


def prepare(settings: Settings, sources: Mapping[str, str] | None = None) -> Credentials:
    """Before serving, once: resolve the tokens (for every worker) and apply the subscribers config file.

    ``sources`` says where each configured token came from (its option or variable). `Rejected` when the config
    file is refused.
    """
    policy = AddressPolicy.from_setting(settings.allow_networks)
    # The config file first: a mistake in it stops the start before anything, a new database included.
    checked = (
        None if settings.config_path is None else read_config(settings.config_path, partial(vet_destination, policy))
    )
    sealer = Sealer.from_file(settings.secret_key_file)
    with store_for(settings.db_path, pool_size=1, statement_timeout=settings.statement_timeout, sealer=sealer) as store:
        credentials = resolve_credentials(settings, store, utc_now, sources)
        if settings.secret_key_file is None:  # once the database opened: a failed start says only why
            logger.warning(
                "secrets are stored in clear in the database (tokens, the console's session key, subscribers'"
                " signing secrets): set RELAY_SECRET_KEY_FILE to encrypt them (docs/operations.md)",
                extra={"action": "secrets_in_clear"},
            )
        if settings.config_path is None:
            return credentials
        subscribers = Subscribers(
            store,
            policy,
            utc_now,
            secret_grace=timedelta(seconds=settings.secret_grace),
        )
        changes = apply_config(subscribers, settings.config_path, checked)
    for change in changes:
        logger.info("config: %s", change, extra={"action": "config_applied"})
    return credentials


def run(settings: Settings, credentials: Credentials) -> None:
    """Serve until told to stop: one process, or ``settings.workers`` sharing one listening socket.

    ``credentials`` and the config file come from `prepare`: the apps neither resolve nor apply them
    again (workers applying the config all at once would race to create the same subscribers).
    """
    # The COS sources too are read here once (their credentials from files or the environment), not per worker.
    sources = read_cos_sources(settings.config_path) if settings.config_path is not None else []
    settings = settings.replace(config_path=None)
    logger.info(
        "subscriber URLs may reach non-public networks: %s",
        settings.allow_networks or "none (set RELAY_ALLOW_NETWORKS or --allow-networks to allow some)",
        extra={"action": "allow_networks"},
    )
    if settings.workers == 1:
        single = create_app(settings, credentials=credentials, cos_sources=sources)
        freeze_startup_heap()
        uvicorn.run(single, **_uvicorn_options(settings))
        return
    # Each worker counts into its own files here and /metrics, whichever worker answers, adds them all up.
    with tempfile.TemporaryDirectory(prefix="cos-relay-metrics-") as directory:
        app = functools.partial(worker_app, settings, credentials, Path(directory), sources)
        config = uvicorn.Config(app, factory=True, workers=settings.workers, **_uvicorn_options(settings))
        sock = config.bind_socket()
        try:
            Multiprocess(config, sockets=[sock]).run()
        finally:
            sock.close()


def worker_app(
    settings: Settings, credentials: Credentials, metrics_dir: Path, cos_sources: Sequence[CosSource] = ()
) -> Starlette:
    """The app of one worker process, built in that process (uvicorn calls it as the app factory)."""
    logs.configure(settings.log_level, settings.log_format)
    count_into(metrics_dir)  # before create_app makes the first metric
    app = create_app(settings, credentials=credentials, metrics_dir=metrics_dir, cos_sources=cos_sources)
    freeze_startup_heap()
    return app


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Every phase of a connection has a deadline, heads a size, the process a number of connections below its
    open-file limit; X-Forwarded-For is believed only from configured proxies."""
    open_files = raise_open_file_limit()
    cap = connection_cap(settings.max_connections, open_files)
    limits = ConnectionLimits(
        head_timeout=settings.body_timeout,
        body_timeout=settings.body_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        send_timeout=settings.body_timeout,
        max_head=settings.max_head,
        max_line=min(8 * KIB, settings.max_head),
    )
    logger.debug("at most %d connections (open-file limit %d)", cap, open_files, extra={"action": "connection_cap"})
    proxies = parse_proxies(settings.forwarded_allow_ips)
    return {
        "host": settings.host,
        "port": settings.port,
        # Access logs would print the callback URL, token included: cos-relay logs each callback itself.
        "access_log": False,
        "server_header": False,
        # uvicorn keeps the logging `relay.logs` set up (and its format) instead of its own.
        "log_config": None,
        # Each worker process unpickles its own copy of the (empty) cap.
        "http": functools.partial(BoundedProtocol, limits=limits, cap=ConnectionCap(cap)),
        "timeout_keep_alive": settings.keepalive_timeout,
        # No WebSocket routes: an upgrade request is an ordinary request, under the deadlines above.
        "ws": "none",
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies,
    }


def freeze_startup_heap() -> None:
    """Collect once, then leave every object alive now out of all later garbage collections.

    The callback schema, the app and the imported modules are hundreds of thousands of objects that
    never die, and each full collection walked them all again: in a delivery drain (bench.delivery),
    freezing them took the event loop from ~100 to ~75-85 µs of CPU per delivery. Only the process's
    owner calls this (`cos-relay serve`, once per worker, after building the app), never a library:
    anything alive at that moment is never collected.
    """
    gc.collect()
    gc.freeze()
