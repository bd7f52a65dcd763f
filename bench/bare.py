"""The baseline servers: a bare Starlette endpoint on uvicorn that reads the body and answers 200.

Run: python -m bench.bare PORT [WORKERS] [--forward URL]

Same server options as ``cos-relay serve``: uvicorn with httptools and uvloop, access log off, no
server header. ``GET /healthz`` answers, so readiness probes work as they do on the gateway.

With ``--forward URL`` it is the end-to-end baseline instead: it answers 200 at once and then posts
``{"subject": JobId}`` to URL (the sink) from a background task, the same two hops as the gateway
with no validation, storage, signing or retry bookkeeping.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ACCEPTED = b'{"status":"accepted"}'


async def accept(request: Request) -> Response:
    await request.body()
    return Response(ACCEPTED, media_type="application/json")


async def probe(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/cos/callback", accept, methods=["POST"]), Route("/healthz", probe)])


def forwarder(url: str) -> Starlette:
    """Answer 200, then send the JobId on to ``url`` in the background."""
    tasks: set[asyncio.Task[None]] = set()
    sessions: list[aiohttp.ClientSession] = []

    async def forward(body: bytes) -> None:
        start = body.find(b"<JobId>") + len(b"<JobId>")
        subject = body[start : body.find(b"</JobId>", start)].decode()
        headers = {"Content-Type": "application/cloudevents+json"}
        async with sessions[0].post(url, data=orjson.dumps({"subject": subject}), headers=headers) as response:
            await response.read()

    async def relay(request: Request) -> Response:
        task = asyncio.create_task(forward(await request.body()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return Response(ACCEPTED, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            sessions.append(session)
            yield

    return Starlette(
        routes=[Route("/cos/callback", relay, methods=["POST"]), Route("/healthz", probe)], lifespan=lifespan
    )


def server_settings(port: int) -> dict[str, Any]:
    """uvicorn's options for every baseline server: those ``cos-relay serve`` uses, on loopback."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "access_log": False,
        "server_header": False,
        "log_level": "warning",
        "loop": "uvloop",
        "http": "httptools",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("workers", type=int, nargs="?", default=1)
    parser.add_argument("--forward", metavar="URL")
    options = parser.parse_args()
    settings = server_settings(options.port)
    if options.forward:
        uvicorn.run(forwarder(options.forward), **settings)
    elif options.workers == 1:
        uvicorn.run(app, **settings)
    else:
        uvicorn.run("bench.bare:app", workers=options.workers, **settings)


if __name__ == "__main__":
    main()
