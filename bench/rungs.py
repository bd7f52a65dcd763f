"""The ingest ladder's servers: the bare endpoint plus one more of the gateway's own steps per rung.

Run: python -m bench.rungs RUNG PORT [DB]

Each rung is bench/bare.py's endpoint (same uvicorn options) doing some of what the gateway does per
callback, with the gateway's own code, and nothing else:

* ``parse``: the hardened parse (`relay.validate.parse.parse`: UTF-8 and prolog checks, node and depth
  limits, lxml without DTDs or entities).
* ``validate``: parse, then schema validation and conversion, the callback model and its item limits
  (`Reader.check`): everything the gateway does before storing, without building events.
* ``commit``: no parse; the raw body inserted into a SQLite file (WAL, default durability) through the
  gateway's group-committing single writer (`relay.store.sqlite.writer.Writer`), 200 after the commit.
* ``parse-commit``: parse, then commit the raw body: the acknowledgement path of a design that validates
  in native code at no cost and derives jobs, events and deliveries later (an inbox).
* ``validate-commit``: validate, then commit the raw body: the same design with today's validator.

What separates one rung from the next is what that step costs when it runs inside the server; what
separates the last from ``cos-relay serve`` is storing jobs, events and deliveries and the rest
(token, metrics, dedup). bench/floor.py runs them.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.bare import ACCEPTED, probe, server_settings
from relay.ingest import Reader
from relay.store.sqlite.connection import connect
from relay.store.sqlite.writer import Writer
from relay.validate.parse import new_xml_parser, parse
from relay.validate.schema import CallbackSchema

RUNGS = ("parse", "validate", "commit", "parse-commit", "validate-commit")


def _inbox(path: Path) -> sqlite3.Connection:
    conn = connect(path, busy_timeout=0)
    conn.execute("CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY, received_at TEXT, body BLOB)")
    return conn


def app(rung: str, db: Path) -> Starlette:
    if rung not in RUNGS:
        raise SystemExit(f"unknown rung {rung!r}: choose one of {', '.join(RUNGS)}")
    parser, reader = new_xml_parser(), Reader(CallbackSchema.load())
    writer = Writer(lambda: _inbox(db))
    checks: dict[str, Callable[[bytes], object]] = {
        "parse": lambda body: parse(body, "xml", parser),
        "validate": lambda body: reader.check(body, "xml", parser),
        "commit": bytes.__len__,  # nothing to check
    }
    check = checks[rung.removesuffix("-commit")]

    async def store(body: bytes) -> None:
        stamp = datetime.now(UTC).isoformat()
        await writer.run(lambda conn: conn.execute("INSERT INTO inbox(received_at, body) VALUES (?, ?)", (stamp, body)))

    async def skip(body: bytes) -> None:
        return None

    commit: Callable[[bytes], Awaitable[None]] = store if rung.endswith("commit") else skip

    async def accept(request: Request) -> Response:
        body = await request.body()
        check(body)
        await commit(body)
        return Response(ACCEPTED, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        try:
            yield
        finally:
            writer.stop()

    routes = [Route("/cos/callback", accept, methods=["POST"]), Route("/healthz", probe)]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rung", choices=RUNGS)
    parser.add_argument("port", type=int)
    parser.add_argument("db", type=Path, nargs="?", default=Path("rung.db"))
    options = parser.parse_args()
    uvicorn.run(app(options.rung, options.db), **server_settings(options.port))


if __name__ == "__main__":
    main()
