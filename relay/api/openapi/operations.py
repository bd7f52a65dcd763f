"""How one operation is written down: its answers by status, its parameters and body, by reference."""

from __future__ import annotations

from typing import Any

from relay.api.openapi.schemas import Schema, ref

#: The shared error answers (components.responses), by status.
_ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    413: "TooLarge",
    429: "Throttled",
}


def answer(description: str, schema: str | Schema, *, links: dict[str, Any] | None = None) -> Schema:
    """A JSON answer with the named component schema (or an inline one)."""
    content = {"application/json": {"schema": ref(schema) if isinstance(schema, str) else schema}}
    response: Schema = {"description": description, "content": content}
    if links:
        response["links"] = links
    return response


def parameter(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def body(schema: str, description: str, *, required: bool = True) -> Schema:
    return {"description": description, "required": required, "content": {"application/json": {"schema": ref(schema)}}}


def operation(
    operation_id: str,
    summary: str,
    answers: dict[int, Schema],
    *,
    errors: tuple[int, ...] = (),
    parameters: tuple[Schema, ...] = (),
    request: Schema | None = None,
    tag: str,
    security: list[dict[str, list[str]]] | None = None,
    description: str | None = None,
) -> Schema:
    """One operation. ``errors`` are the shared error answers it can give; 401 and 429 are added for the admin
    API. ``description``: what the summary cannot say in a line."""
    responses: dict[str, Schema] = {str(status): response for status, response in answers.items()}
    for status in errors:
        responses[str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status]}"}
    written: Schema = {"operationId": operation_id, "summary": summary, "tags": [tag], "responses": responses}
    if description is not None:
        written["description"] = description
    if parameters:
        written["parameters"] = list(parameters)
    if request is not None:
        written["requestBody"] = request
    if security is not None:
        written["security"] = security
    return written


def admin(operation_id: str, summary: str, answers: dict[int, Schema], **options: Any) -> Schema:
    """An operation under /api: behind the admin bearer token, so it can also answer 401, and 429 to an address
    that sent too many wrong tokens."""
    options["errors"] = (*options.get("errors", ()), 401, 429)
    return operation(operation_id, summary, answers, **options)
