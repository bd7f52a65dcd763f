"""The document of `relay.api.outbox`: subscribers and their deliveries."""

from __future__ import annotations

from typing import Any

from relay.api.openapi.operations import admin, answer, body, parameter
from relay.api.openapi.schemas import DURATION_OR_INSTANT, Schema
from relay.api.params import MAX_SPAN_DAYS

_SUBSCRIBERS, _DELIVERIES = "subscribers", "deliveries"
_NAME = parameter("name")
_EVENT_ID = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ID = parameter("deliveryId")
_CALLBACK_ID = {**parameter("deliveryId"), "description": "The callback's id (GET /api/callbacks)."}
_RECOVER_SINCE: Schema = {
    "name": "since",
    "in": "query",
    "required": True,
    "schema": DURATION_OR_INSTANT,
    "description": f"How far back: 90s, 30m, 2h or 7d (at most {MAX_SPAN_DAYS}d), or an ISO-8601 instant.",
}


def _links(parameters: dict[str, str], *operation_ids: str) -> dict[str, Any]:
    """Links from an answer to the operations on what it names (schemathesis follows them, statefully)."""
    return {op: {"operationId": op, "parameters": parameters} for op in operation_ids}


_BY_NAME = _links(
    {"name": "$response.body#/name"},
    "getSubscriber",
    "updateSubscriber",
    "getSubscriberSecret",
    "pauseSubscriber",
    "resumeSubscriber",
    "rotateSubscriberSecret",
    "recoverSubscriber",
    "removeSubscriber",
) | _links({"subscriber": "$response.body#/name"}, "listDeliveries")
_FIRST_DELIVERY = _links({"id": "$response.body#/items/0/id"}, "getDelivery", "retryDelivery")


def _subscriber_action(operation_id: str, summary: str, answered: str, **options: Any) -> Schema:
    """An operation on one subscriber answering it (``answered``: what the answer is)."""
    return admin(
        operation_id,
        summary,
        {200: answer(answered, "Subscriber")},
        errors=options.pop("errors", (404,)),
        parameters=(_NAME,),
        tag=_SUBSCRIBERS,
        **options,
    )


PATHS: dict[str, dict[str, Schema]] = {
    "/api/subscribers": {
        "get": admin(
            "listSubscribers",
            "Every subscriber (secrets masked)",
            {200: answer("The subscribers.", "SubscriberList")},
            tag=_SUBSCRIBERS,
        ),
        "post": admin(
            "createSubscriber",
            "Add a subscriber",
            {201: answer("Created: the only listing that shows the whole secret.", "Subscriber", links=_BY_NAME)},
            errors=(400, 409, 413),
            request=body("SubscriberCreate", "The subscriber; name and url are required."),
            tag=_SUBSCRIBERS,
        ),
    },
    "/api/subscribers/{name}": {
        "get": _subscriber_action("getSubscriber", "One subscriber", "The subscriber (secret masked)."),
        "patch": _subscriber_action(
            "updateSubscriber",
            "Change any of a subscriber's options but its name and secret",
            "The changed subscriber (secret masked).",
            errors=(400, 404, 413),
            request=body("SubscriberChange", "The fields to change (the secret: rotate-secret).", required=False),
            description="Only the fields given change. A change of kind replaces the secret with the one a new"
            " subscriber of that kind gets (a new Standard Webhooks secret for a webhook or broker, none ('') for a"
            " robot: a Feishu or DingTalk robot's own by rotate-secret) and drops the previous one at once, with no"
            " grace period, so the old kind's secret never signs the new kind's messages. The answer shows the"
            " secret masked: read the new one with GET /api/subscribers/{name}/secret.",
        ),
        "delete": admin(
            "removeSubscriber",
            "Remove a subscriber; its unfinished deliveries are cancelled",
            {200: answer("Removed.", "Removed")},
            errors=(404,),
            parameters=(_NAME,),
            tag=_SUBSCRIBERS,
        ),
    },
    "/api/subscribers/{name}/secret": {
        "get": admin(
            "getSubscriberSecret",
            "The secret(s) events are signed with now, to verify signatures",
            {200: answer("The current secret, and the previous one during its grace period.", "SubscriberSecrets")},
            errors=(404,),
            parameters=(_NAME,),
            tag=_SUBSCRIBERS,
        )
    },
    "/api/subscribers/{name}/pause": {
        "post": _subscriber_action("pauseSubscriber", "Hold deliveries (nothing is lost)", "The paused subscriber.")
    },
    "/api/subscribers/{name}/resume": {
        "post": _subscriber_action(
            "resumeSubscriber", "Enable a paused or disabled subscriber", "The enabled subscriber."
        )
    },
    "/api/subscribers/{name}/rotate-secret": {
        "post": _subscriber_action(
            "rotateSubscriberSecret",
            "New signing secret; the previous one still signs during RELAY_SECRET_GRACE",
            "The subscriber with its new secret shown whole.",
            errors=(400, 404, 413),
            request=body(
                "SecretRotation",
                "The new secret; omitted, one is generated (a webhook's or broker's). A Feishu or DingTalk robot's is"
                " the one its platform shows, given; other robots sign nothing: 400.",
                required=False,
            ),
        )
    },
    "/api/subscribers/{name}/recover": {
        "post": admin(
            "recoverSubscriber",
            "Queue again every dead or failed delivery created since a time",
            {200: answer("How many were queued again.", "Requeued")},
            errors=(400, 404),
            parameters=(_NAME, _RECOVER_SINCE),
            tag=_SUBSCRIBERS,
        )
    },
    "/api/subscribers/{name}/deliveries/{event_id}": {
        "get": admin(
            "getSubscriberDelivery",
            "The delivery of one event to the subscriber with every attempt, whether it has a row (an id) or not",
            {200: answer("The delivery.", "DeliveryDetail")},
            errors=(400, 404),
            parameters=(_NAME, _EVENT_ID),
            tag=_DELIVERIES,
        )
    },
    "/api/subscribers/{name}/deliveries/{event_id}/retry": {
        "post": admin(
            "retrySubscriberDelivery",
            'Queue the delivery of one event to the subscriber again now; one with no row ("id": null) gets one first',
            {200: answer("The delivery, queued again.", "DeliveryDetail")},
            errors=(400, 404),
            parameters=(_NAME, _EVENT_ID),
            tag=_DELIVERIES,
        )
    },
    "/api/deliveries": {
        "get": admin(
            "listDeliveries",
            "Deliveries, newest first",
            {200: answer("One page of deliveries.", "DeliveryPage", links=_FIRST_DELIVERY)},
            errors=(400, 404),
            parameters=(
                {
                    "name": "subscriber",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Only deliveries to this subscriber (404 if there is none by that name).",
                },
                parameter("deliveryState"),
                {"name": "event_id", "in": "query", "required": False, "schema": {"type": "string"}},
                parameter("limit"),
                parameter("cursor"),
            ),
            tag=_DELIVERIES,
        )
    },
    "/api/deliveries/{id}": {
        "get": admin(
            "getDelivery",
            "One delivery with every attempt",
            {200: answer("The delivery.", "DeliveryDetail")},
            errors=(400, 404),
            parameters=(_ID,),
            tag=_DELIVERIES,
        )
    },
    "/api/deliveries/{id}/retry": {
        "post": admin(
            "retryDelivery",
            "Queue one delivery again now (400 while it is in flight, cancelled, or held for COS to confirm it)",
            {200: answer("The delivery, queued again.", "DeliveryDetail")},
            errors=(400, 404),
            parameters=(_ID,),
            tag=_DELIVERIES,
        )
    },
    "/api/callbacks/{id}/confirmations": {
        "get": admin(
            "listCallbackConfirmations",
            "The callback's jobs read back from COS (a source with confirm = true): status, reason, COS's state",
            {200: answer("The callback's jobs read back, by job id.", "ConfirmationList")},
            errors=(400,),
            parameters=(_CALLBACK_ID,),
            tag=_DELIVERIES,
        )
    },
    "/api/callbacks/{id}/release": {
        "post": admin(
            "releaseCallback",
            "Send the events of the callback's jobs COS did not confirm after all (404: none is unconfirmed)",
            {200: answer("How many deliveries were queued.", "ConfirmDecision")},
            errors=(400, 404),
            parameters=(_CALLBACK_ID,),
            tag=_DELIVERIES,
        )
    },
    "/api/callbacks/{id}/discard": {
        "post": admin(
            "discardCallback",
            "Cancel the deliveries of the callback's jobs COS did not confirm (404: none is unconfirmed)",
            {200: answer("How many deliveries were cancelled.", "ConfirmDecision")},
            errors=(400, 404),
            parameters=(_CALLBACK_ID,),
            tag=_DELIVERIES,
        )
    },
}
