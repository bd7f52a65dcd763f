"""Liveness and readiness probes (no token: they reveal nothing)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.store import Store
from relay.store.failures import StoreError

logger = logging.getLogger(__name__)


def health_routes(store: Store, clock: Callable[[], datetime]) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await store.check_writable(clock())
        except StoreError as exc:
            logger.warning("not ready: database not writable: %s", exc, extra={"action": "not_ready"})
            return JSONResponse({"status": "unavailable", "detail": "database is not writable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
