"""The app factory: builds the Starlette app from explicit settings and injected edges."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router

from relay.api.health import health_routes
from relay.api.hosts import AllowedHosts, allowed_hosts
from relay.api.nul import RefuseNul
from relay.api.openapi import openapi_route
from relay.api.outbox import outbox_routes
from relay.api.routes import api_routes
from relay.console import console_app
from relay.console.session import SessionKey
from relay.cos.client import CosApi
from relay.cos.confirming import Confirming, scopes
from relay.cos.running import QueueCheck, Reconciling
from relay.cos.sources import CosSource
from relay.deliver.client import Sender
from relay.deliver.destinations import Destinations
from relay.deliver.handshake import Handshakes
from relay.deliver.runner import DeliveryThread
from relay.deliver.ssrf import AddressPolicy
from relay.deliver.worker import DeliveryWorker
from relay.domain.clock import Clock, utc_now
from relay.domain.errors import Rejected
from relay.domain.guessing import Guesses
from relay.domain.retention import Windows
from relay.domain.retry import RetryPolicy
from relay.http.auth import BearerAuth, Credentials, Guessing, Tokens, generate_token, resolve_credentials
from relay.http.errors import error_response
from relay.ingest import Ingest, Reader
from relay.maintenance.pruning import Pruner
from relay.maintenance.shedding import Shedder
from relay.metrics.counters import Metrics
from relay.metrics.exposition import StoreCollector, exposition_registry, render
from relay.metrics.scrape import MetricsEndpoint, SharedRendering
from relay.outbox.config import apply_config
from relay.outbox.config_file import read_cos_sources
from relay.outbox.service import Subscribers
from relay.receive.endpoint import CallbackEndpoint
from relay.settings.table import Settings
from relay.store import store_for
from relay.store.sealing import Sealer
from relay.validate.schema import CallbackSchema

logger = logging.getLogger(__name__)

#: On shutdown, attempts in flight get this long to finish and be recorded.
SHUTDOWN_GRACE = 5.0


def cos_client(source: CosSource) -> CosApi:
    """A COS source's API client: its endpoint, its credentials, the wall clock for signatures."""
    return CosApi(source.endpoint, source.credentials, clock=time.time)


def _queue_check(settings: Settings, tokens: Tokens) -> QueueCheck | None:
    """What the reconciler checks the sources' queues against: only with RELAY_PUBLIC_URL, the URL COS posts to
    (without it the gateway cannot tell its own address from COS's side)."""
    if settings.public_url is None:
        return None

    def in_force() -> tuple[str, ...]:
        given = (tokens.credentials.callback_token, tokens.credentials.previous_callback_token)
        return tuple(token for token in given if token)

    return QueueCheck(f"{settings.base_url}/cos/callback", in_force)


def _sources_of(settings: Settings) -> list[CosSource]:
    return read_cos_sources(settings.config_path) if settings.config_path is not None else []


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    sender: Sender | None = None,
    registry: CollectorRegistry | None = None,
    credentials: Credentials | None = None,
    metrics_dir: Path | None = None,
    schema: CallbackSchema | None = None,
    cos_sources: Sequence[CosSource] | None = None,
    cos_api: Callable[[CosSource], CosApi] = cos_client,
) -> Starlette:
    """A cos-relay ASGI app. Nothing is opened until the lifespan starts.

    ``sender`` replaces the HTTP transport to subscribers; ``registry`` receives the metrics (a fresh
    one by default, so two apps in one process never share counters). ``credentials`` are tokens
    already resolved (by `cos-relay serve`, once for every worker); without them the lifespan resolves
    them. ``metrics_dir`` is where every worker counts (see `relay.metrics.files`): /metrics adds them up.
    ``schema`` is the callback schema already compiled (it is immutable: apps may share one); without it the
    packaged XSD is compiled here. ``cos_sources`` are the COS sources to reconcile (`cos-relay serve` reads
    them from the config file once; without them the lifespan reads ``settings.config_path``'s), each through the
    client ``cos_api`` makes.
    """
    metrics = Metrics(registry or CollectorRegistry())
    store = store_for(
        settings.db_path,
        durability=settings.durability,
        write_timeout=settings.write_timeout,
        pool_size=settings.pool_size,
        statement_timeout=settings.statement_timeout,
        observe=metrics.transaction,
        sealer=Sealer.from_file(settings.secret_key_file),
    )
    schema = schema or CallbackSchema.load()
    policy = AddressPolicy.from_setting(settings.allow_networks)
    sender = sender or Sender(policy)
    # The handshake names us by the host COS reaches us at, else by the gateway's id.
    origin = urlsplit(settings.public_url).hostname if settings.public_url else None
    handshakes = Handshakes(store, sender, origin or settings.gateway_id, timedelta(seconds=settings.handshake_every))
    destinations = Destinations.of(sender, handshakes, settings.public_url, policy=policy)
    worker = DeliveryWorker(
        store,
        destinations,
        RetryPolicy(settings.retry_schedule),
        clock,
        capacity=settings.delivery_capacity,
        poll_interval=settings.poll_interval,
        disable_after=timedelta(seconds=settings.disable_after),
        metrics=metrics,
    )
    pruner = Pruner(
        store,
        Windows.of_seconds(settings.retention, settings.job_retention),
        clock,
        interval=settings.prune_interval,
        metrics=metrics,
    )
    shedder = Shedder(store, settings.max_backlog, clock, max_db_size=settings.max_db_size, metrics=metrics)
    delivery = DeliveryThread(worker, destinations, grace=SHUTDOWN_GRACE)
    subscribers = Subscribers(
        store, policy, clock, secret_grace=timedelta(seconds=settings.secret_grace), on_change=delivery.wake
    )
    # Unless given, filled in by the lifespan once the store is open (tokens may come from the database).
    resolved = credentials is not None
    credentials = credentials or Credentials(settings.callback_token, settings.admin_token or "")
    guessing = Guessing(Guesses(settings.guess_limit, settings.guess_window), metrics, clock)
    tokens = Tokens(credentials, store, clock)
    # With COS sources, callbacks are theirs only (their buckets); the sources are known before the lifespan.
    sources = list(cos_sources) if cos_sources is not None else _sources_of(settings)
    buckets = frozenset(source.bucket for source in sources) or None
    confirming = Confirming(sources, store, clock, metrics, cos_api, on_release=delivery.wake)
    reader = Reader(schema, gateway=settings.gateway_id, buckets=buckets)
    ingest = Ingest(store, reader, scopes(sources), on_hold=confirming.wake)
    callback = CallbackEndpoint(
        settings=settings,
        tokens=tokens,
        store=store,
        ingest=ingest,
        clock=clock,
        metrics=metrics,
        guessing=guessing,
        on_commit=delivery.wake,
        at_bound=shedder.at_bound,
        on_accepted=shedder.accepted,
    )
    exposition = exposition_registry(
        metrics, StoreCollector(store.outbox_stats, clock, size_limit=settings.max_db_size), metrics_dir
    )

    # Rendering reads the database for the outbox gauges: SharedRendering keeps it off the event loop.
    metrics_endpoint = MetricsEndpoint(
        SharedRendering(functools.partial(render, exposition)), settings.metrics_token, guessing
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store.open()
        try:
            if not resolved:
                tokens.credentials = resolve_credentials(settings, store, clock)
            # Kept in the database so every worker process signs console sessions alike.
            session_key.derive(store.secret("console_session_key", generate_token(), clock()))
            if settings.config_path is not None:
                for change in apply_config(subscribers, settings.config_path):
                    logger.info("config: %s", change, extra={"action": "config_applied"})
            store.watch(delivery.wake)
            await delivery.start()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(pruner.run)
                tasks.start_soon(shedder.run)
                if sources:
                    check = _queue_check(settings, tokens)
                    tasks.start_soon(Reconciling(sources, store, ingest, clock, metrics, cos_api, check).run)
                if any(source.confirm for source in sources):
                    tasks.start_soon(confirming.run)
                try:
                    yield
                finally:
                    await delivery.stop()
                    tasks.cancel_scope.cancel()
        finally:
            store.close()

    session_key = SessionKey()
    admin = [Middleware(BearerAuth, tokens=tokens, guessing=guessing)]
    api = Router([*api_routes(store, clock), *outbox_routes(store, subscribers, clock)], redirect_slashes=False)
    app = Starlette(
        middleware=[Middleware(AllowedHosts, patterns=allowed_hosts(settings)), Middleware(RefuseNul)],
        exception_handlers={Rejected: render_rejection, HTTPException: render_http_error},
        routes=[
            Route("/cos/callback", callback.handle, methods=["POST"]),
            *health_routes(store, clock),
            Route("/metrics", metrics_endpoint.handle, methods=["GET"]),
            openapi_route(),
            Mount("/api", app=api, middleware=admin),
            Route("/console", lambda request: RedirectResponse("/console/", status_code=308), methods=["GET"]),
            Mount("/console", app=console_app(settings, store, subscribers, tokens, session_key, clock, guessing)),
        ],
        lifespan=lifespan,
    )
    # A slash redirect's Location is built from the Host header, which the client chooses (and a redirected
    # POST would carry the callback token to it): a path with a stray slash is simply not found.
    app.router.redirect_slashes = False
    return app


async def render_rejection(request: Request, error: Exception) -> Response:
    """Every refusal the API raises becomes its short JSON error with its status."""
    assert isinstance(error, Rejected)
    return error_response(error)


async def render_http_error(request: Request, error: Exception) -> Response:
    """No route for the path (404) or the method (405): the same JSON error shape as every other refusal."""
    assert isinstance(error, HTTPException)
    label, detail = _ROUTING_ERRORS.get(error.status_code, ("http_error", error.detail))
    return JSONResponse({"error": label, "detail": detail}, status_code=error.status_code, headers=error.headers)


_ROUTING_ERRORS = {
    404: ("not_found", "no route has this path (GET /openapi.json lists them)"),
    405: ("method_not_allowed", "the route does not take this method (GET /openapi.json lists them)"),
}
