"""A bare subscriber for benchmarks: uvicorn (httptools, uvloop) answering 204 to every POST.

Run: python -m bench.sink PORT
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def receive(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


def main() -> None:
    app = Starlette(routes=[Route("/hook", receive, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
