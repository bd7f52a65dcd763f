"""Console pages for subscribers, deliveries and a callback's jobs read back from COS, and the buttons that change
them (POST, CSRF-checked)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from relay.api import params
from relay.console.guard import checked_form
from relay.console.render import Renderer
from relay.console.session import Sessions
from relay.domain.errors import NotFound, UnknownDelivery
from relay.outbox.service import Subscribers
from relay.store import Store

#: Recent deliveries on a subscriber's page.
RECENT = 20


def ratio(states: dict[str, int]) -> str:
    """Delivered out of the recent attempted deliveries that are settled (delivered, dead, or failing)."""
    settled = sum(states.values()) - states.get("in_flight", 0) - states.get("cancelled", 0)
    return "no attempts yet" if settled <= 0 else f"{100 * states.get('delivered', 0) / settled:.0f}% of {settled}"


def outbox_console_routes(
    store: Store,
    subscribers: Subscribers,
    sessions: Sessions,
    renderer: Renderer,
    clock: Callable[[], datetime],
    public_url: str | None,
) -> list[BaseRoute]:
    async def call(function: Callable[..., Any], *args: Any) -> Any:
        # Store calls block (reads on a pooled connection, writes on the writer thread): never on the event loop.
        return await anyio.to_thread.run_sync(function, *args)

    def listing() -> list[dict[str, Any]]:
        every = subscribers.all()
        recent = store.recent_states([subscriber.id for subscriber in every])
        return [{**subscriber.public(), "ratio": ratio(recent.get(subscriber.id, {}))} for subscriber in every]

    async def list_subscribers(request: Request) -> Response:
        return renderer.page(request, "subscribers.html", subscribers=await call(listing))

    def detail(name: str) -> dict[str, Any]:
        subscriber = subscribers.get(name)
        return {
            "subscriber": subscribers.shown(subscriber),
            "ratio": ratio(store.recent_states([subscriber.id]).get(subscriber.id, {})),
            "deliveries": store.list_deliveries(subscriber=name, limit=RECENT).items,
        }

    async def subscriber(request: Request) -> Response:
        query = request.query_params
        notice = None
        if (requeued := params.one(query, "requeued")) is not None and requeued.isdigit():
            notice = f"Recovery queued {int(requeued)} deliveries again."
        context = await call(detail, request.path_params["name"])
        return renderer.page(request, "subscriber.html", secret=None, notice=notice, **context)

    def back(name: str, query: str = "") -> Response:
        # POST, then redirect, then GET: reloading the page never sends the action twice.
        return RedirectResponse(f"/console/subscribers/{quote(name, safe='')}{query}", status_code=303)

    async def pause(request: Request) -> Response:
        await checked_form(request, sessions, public_url)
        await call(subscribers.pause, request.path_params["name"])
        return back(request.path_params["name"])

    async def resume(request: Request) -> Response:
        await checked_form(request, sessions, public_url)
        await call(subscribers.resume, request.path_params["name"])
        return back(request.path_params["name"])

    async def rotate(request: Request) -> Response:
        await checked_form(request, sessions, public_url)
        name = request.path_params["name"]
        rotated = await call(subscribers.rotate_secret, name)
        # The new secret is on this one response (not cached: see the guard's headers), never on a GET.
        context = await call(detail, name)
        return renderer.page(request, "subscriber.html", secret=rotated.secret, notice=None, **context)

    async def recover(request: Request) -> Response:
        fields = await checked_form(request, sessions, public_url)
        since = params.parse_since(fields.get("since", "").strip(), clock())
        count = await call(subscribers.recover, request.path_params["name"], since)
        return back(request.path_params["name"], f"?requeued={count}")

    def delivery_id(request: Request) -> int:
        return params.identifier(request.path_params["id"], "delivery id")

    def delivery_detail(number: int) -> dict[str, Any]:
        found = store.get_delivery(number)
        if found is None:
            raise UnknownDelivery(f"no delivery has id {number}")
        return {"delivery": found, "event": store.event_body(found["event_id"])}

    async def delivery(request: Request) -> Response:
        context = await call(delivery_detail, delivery_id(request))
        retried = params.one(request.query_params, "retried") == "1"
        return renderer.page(request, "delivery.html", retried=retried, **context)

    async def retry(request: Request) -> Response:
        await checked_form(request, sessions, public_url)
        number = delivery_id(request)
        await call(subscribers.retry_delivery, number)
        return RedirectResponse(f"/console/deliveries/{number}?retried=1", status_code=303)

    async def delivery_of(request: Request) -> Response:
        """A delivery with no row of its own (the event log's), by subscriber and event."""
        name, event_id = request.path_params["name"], request.path_params["event_id"]
        found = await call(subscribers.delivery_of, name, event_id)
        if found["id"] is not None:  # it has a row: its page
            return RedirectResponse(f"/console/deliveries/{found['id']}", status_code=303)
        context = {"delivery": found, "event": await call(store.event_body, event_id)}
        return renderer.page(request, "delivery.html", retried=False, **context)

    async def retry_of(request: Request) -> Response:
        await checked_form(request, sessions, public_url)
        name, event_id = request.path_params["name"], request.path_params["event_id"]
        retried = await call(subscribers.retry_delivery_of, name, event_id)  # written as a row first: it has an id
        return RedirectResponse(f"/console/deliveries/{retried['id']}?retried=1", status_code=303)

    def callback_id(request: Request) -> int:
        return params.identifier(request.path_params["id"], "callback id")

    async def callback(request: Request) -> Response:
        number = callback_id(request)
        jobs = await store.callback_confirmations(number)
        if not jobs:
            raise NotFound(f"callback {number} had no job for COS to confirm")
        decided = params.one(request.query_params, "decided")
        return renderer.page(request, "callback.html", callback_id=number, jobs=jobs, decided=decided)

    async def decide(request: Request, decision: str) -> Response:
        await checked_form(request, sessions, public_url)
        number = callback_id(request)
        await call(subscribers.decide_unconfirmed, number, decision)
        return RedirectResponse(f"/console/callbacks/{number}?decided={decision}", status_code=303)

    async def release(request: Request) -> Response:
        return await decide(request, "release")

    async def discard(request: Request) -> Response:
        return await decide(request, "discard")

    named = "/subscribers/{name}"
    return [
        Route("/callbacks/{id}", callback, methods=["GET"]),
        Route("/callbacks/{id}/release", release, methods=["POST"]),
        Route("/callbacks/{id}/discard", discard, methods=["POST"]),
        Route("/subscribers", list_subscribers, methods=["GET"]),
        Route(named, subscriber, methods=["GET"]),
        Route(f"{named}/pause", pause, methods=["POST"]),
        Route(f"{named}/resume", resume, methods=["POST"]),
        Route(f"{named}/rotate-secret", rotate, methods=["POST"]),
        Route(f"{named}/recover", recover, methods=["POST"]),
        Route(f"{named}/deliveries/{{event_id}}", delivery_of, methods=["GET"]),
        Route(f"{named}/deliveries/{{event_id}}/retry", retry_of, methods=["POST"]),
        Route("/deliveries/{id}", delivery, methods=["GET"]),
        Route("/deliveries/{id}/retry", retry, methods=["POST"]),
    ]
