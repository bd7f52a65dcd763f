"""Admin API for subscribers and deliveries: CRUD, pause/resume, rotation, replay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from relay.api import params
from relay.api.params import parse_since
from relay.domain.delivery import DELIVERY_STATES
from relay.domain.errors import BadParameter, TooLarge, UnknownDelivery
from relay.outbox.options import check_options
from relay.outbox.service import Subscribers
from relay.store import Store

#: On every answer carrying a secret: no browser, proxy or client cache may keep a copy.
NO_STORE = {"Cache-Control": "no-store"}

#: A subscriber definition is a few hundred bytes; the cap keeps a runaway client from filling memory.
MAX_BODY = 64 * 1024


async def _body(request: Request) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge(f"the request body is over the {MAX_BODY} byte limit")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        document = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise BadParameter("the request body must be a JSON object") from None
    if not isinstance(document, dict):
        raise BadParameter("the request body must be a JSON object")
    return document


def outbox_routes(store: Store, subscribers: Subscribers, clock: Callable[[], datetime]) -> list[BaseRoute]:
    async def call(function: Callable[..., Any], *args: Any) -> Any:
        # Store writes block on the writer thread: never on the event loop.
        return await anyio.to_thread.run_sync(function, *args)

    async def list_subscribers(request: Request) -> Response:
        found = await call(lambda: [subscribers.shown(subscriber) for subscriber in subscribers.all()])
        return JSONResponse({"items": found})

    async def create_subscriber(request: Request) -> Response:
        body = await _body(request)
        name = body.pop("name", None)
        if not isinstance(name, str) or not isinstance(body.get("url"), str):
            raise BadParameter("name and url are required strings")
        options = check_options(body)
        url = options.pop("url")
        created = await call(lambda: subscribers.shown(subscribers.add(name, url, **options), reveal_secret=True))
        # The only response that ever shows the secret (besides rotation and the secret endpoint).
        return JSONResponse(created, status_code=201, headers=NO_STORE)

    async def get_subscriber(request: Request) -> Response:
        return JSONResponse(await call(subscribers.describe, request.path_params["name"]))

    async def get_secret(request: Request) -> Response:
        return JSONResponse(await call(subscribers.secrets, request.path_params["name"]), headers=NO_STORE)

    async def update_subscriber(request: Request) -> Response:
        changes = check_options(await _body(request))
        if "secret" in changes:
            raise BadParameter("change a secret with POST /api/subscribers/{name}/rotate-secret")
        updated = await call(lambda: subscribers.shown(subscribers.update(request.path_params["name"], changes)))
        return JSONResponse(updated)

    async def delete_subscriber(request: Request) -> Response:
        cancelled = await call(subscribers.remove, request.path_params["name"])
        return JSONResponse({"removed": request.path_params["name"], "cancelled_deliveries": cancelled})

    async def pause(request: Request) -> Response:
        return JSONResponse(await call(lambda: subscribers.shown(subscribers.pause(request.path_params["name"]))))

    async def resume(request: Request) -> Response:
        return JSONResponse(await call(lambda: subscribers.shown(subscribers.resume(request.path_params["name"]))))

    async def rotate(request: Request) -> Response:
        secret = check_options(await _body(request)).get("secret")
        name = request.path_params["name"]
        rotated = await call(lambda: subscribers.shown(subscribers.rotate_secret(name, secret), reveal_secret=True))
        return JSONResponse(rotated, headers=NO_STORE)

    async def recover(request: Request) -> Response:
        since = parse_since(params.one(request.query_params, "since"), clock())
        count = await call(subscribers.recover, request.path_params["name"], since)
        return JSONResponse({"requeued": count, "since": since.isoformat()})

    async def list_deliveries(request: Request) -> Response:
        query = request.query_params
        subscriber = params.one(query, "subscriber")
        if subscriber is not None:
            await call(subscribers.get, subscriber)  # 404 naming the known ones, not an empty page
        page = await call(
            lambda: store.list_deliveries(
                subscriber=subscriber,
                state=params.folded_choice(query, "state", DELIVERY_STATES),
                event_id=params.one(query, "event_id"),
                limit=params.limit(query),
                cursor=params.cursor(query, pair=True),
            )
        )
        return JSONResponse({"items": page.items, "next_cursor": page.cursor})

    def delivery_id(request: Request) -> int:
        return params.identifier(request.path_params["id"], "delivery id")

    async def get_delivery(request: Request) -> Response:
        found = await call(store.get_delivery, delivery_id(request))
        if found is None:
            raise UnknownDelivery("no such delivery")
        return JSONResponse(found)

    async def retry_delivery(request: Request) -> Response:
        return JSONResponse(await call(subscribers.retry_delivery, delivery_id(request)))

    async def get_delivery_of(request: Request) -> Response:
        found = await call(subscribers.delivery_of, request.path_params["name"], request.path_params["event_id"])
        return JSONResponse(found)

    async def retry_delivery_of(request: Request) -> Response:
        retried = await call(
            subscribers.retry_delivery_of, request.path_params["name"], request.path_params["event_id"]
        )
        return JSONResponse(retried)

    def callback_id(request: Request) -> int:
        return params.identifier(request.path_params["id"], "callback id")

    async def release_callback(request: Request) -> Response:
        return JSONResponse(await call(subscribers.decide_unconfirmed, callback_id(request), "release"))

    async def discard_callback(request: Request) -> Response:
        return JSONResponse(await call(subscribers.decide_unconfirmed, callback_id(request), "discard"))

    async def callback_confirmations(request: Request) -> Response:
        return JSONResponse({"items": await store.callback_confirmations(callback_id(request))})

    named = "/subscribers/{name}"
    return [
        Route("/subscribers", list_subscribers, methods=["GET"]),
        Route("/subscribers", create_subscriber, methods=["POST"]),
        Route(named, get_subscriber, methods=["GET"]),
        Route(named, update_subscriber, methods=["PATCH"]),
        Route(named, delete_subscriber, methods=["DELETE"]),
        Route(f"{named}/secret", get_secret, methods=["GET"]),
        Route(f"{named}/pause", pause, methods=["POST"]),
        Route(f"{named}/resume", resume, methods=["POST"]),
        Route(f"{named}/rotate-secret", rotate, methods=["POST"]),
        Route(f"{named}/recover", recover, methods=["POST"]),
        Route(f"{named}/deliveries/{{event_id}}", get_delivery_of, methods=["GET"]),
        Route(f"{named}/deliveries/{{event_id}}/retry", retry_delivery_of, methods=["POST"]),
        Route("/deliveries", list_deliveries, methods=["GET"]),
        Route("/deliveries/{id}", get_delivery, methods=["GET"]),
        Route("/deliveries/{id}/retry", retry_delivery, methods=["POST"]),
        Route("/callbacks/{id}/confirmations", callback_confirmations, methods=["GET"]),
        Route("/callbacks/{id}/release", release_callback, methods=["POST"]),
        Route("/callbacks/{id}/discard", discard_callback, methods=["POST"]),
    ]
