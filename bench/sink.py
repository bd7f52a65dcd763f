"""A bare subscriber for benchmarks: uvicorn (httptools, uvloop) answering 204 to every POST.

Run: python -m bench.sink PORT [RECORD]

With RECORD, each event's arrival is appended to that file as a line "subject unix_time", the time
taken as soon as the whole body has arrived (the end-to-end benchmark correlates it by JobId).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def app(record: Path | None = None) -> Starlette:
    log = record.open("a", buffering=1) if record is not None else None

    async def receive(request: Request) -> Response:
        body = await request.body()
        if log is not None:
            arrived = time.time()
            log.write(f"{orjson.loads(body).get('subject')} {arrived:.6f}\n")
        return Response(status_code=204)

    return Starlette(routes=[Route("/hook", receive, methods=["POST"])])


def main() -> None:
    record = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    uvicorn.run(
        app(record),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
