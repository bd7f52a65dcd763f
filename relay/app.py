"""The app factory: builds the Starlette app from explicit settings and injected edges."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route

from relay.api.health import health_routes
from relay.api.routes import api_routes
from relay.auth import BearerAuth, Credentials, resolve_credentials
from relay.receive.endpoint import CallbackEndpoint
from relay.settings import Settings
from relay.store import Store
from relay.validate.schema import CallbackSchema

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, *, clock: Clock = utc_now) -> Starlette:
    """A cos-relay ASGI app. Nothing is opened until the lifespan starts."""
    store = Store(settings.db_path, durability=settings.durability)
    schema = CallbackSchema.load()
    # Filled in by the lifespan once the store is open (tokens may come from the database).
    credentials = Credentials(callback_token=settings.callback_token, admin_token=settings.admin_token or "")
    callback = CallbackEndpoint(settings=settings, credentials=credentials, store=store, schema=schema, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store.open()
        resolved = resolve_credentials(settings, store, clock)
        credentials.callback_token = resolved.callback_token
        credentials.admin_token = resolved.admin_token
        try:
            yield
        finally:
            store.close()

    return Starlette(
        routes=[
            Route("/cos/callback", callback, methods=["POST"]),
            *health_routes(store, clock),
            Mount("/api", routes=api_routes(store), middleware=[Middleware(BearerAuth, credentials=credentials)]),
        ],
        lifespan=lifespan,
    )


def create_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings come from RELAY_* variables."""
    return create_app(Settings.from_env(os.environ))
