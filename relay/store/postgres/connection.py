"""asyncpg on an event loop thread of its own: one pool for the sync callers (CLI, API threads) and the app.

asyncpg measured faster than psycopg 3 on the ingest transaction and the delivery claim
(bench/postgres_driver.py, docs/performance.md), but it only speaks asyncio, and the store's sync methods
are called from threads and from the CLI with no loop at all. So the pool lives on one loop, in one
thread, like the SQLite writer: callers hand it work and wait (sync) or await it (async). Connections are
opened lazily and replaced when they break, so the store reconnects by itself once PostgreSQL is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from relay.store.db import CHANNEL, POSTGRES, Dialect, Operation
from relay.store.failures import StoreConflict, StoreError, StoreUnavailable
from relay.store.postgres.group import GroupCommit, Together
from relay.store.records import PostgresUrl

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: What runs on a pooled connection (typed as the connection it stands for).
Work = Callable[[asyncpg.Connection], Awaitable[T]]
#: Told about every write transaction: its duration in seconds, and the kind of error if it failed.
Observer = Callable[[float, str | None], None]

#: Seconds between tries to listen again after the listening connection broke.
RELISTEN = 1.0


def failure(exc: BaseException) -> StoreError | None:
    """The store's error for a driver or network failure; None for anything else (a bug: let it raise)."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return StoreConflict(str(exc))
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return StoreUnavailable("the database is read-only", "readonly")
    if isinstance(exc, asyncpg.QueryCanceledError | TimeoutError):
        return StoreUnavailable("the database did not answer in time", "timeout")
    if isinstance(exc, asyncpg.DiskFullError):
        return StoreUnavailable("the database's disk is full", "full")
    if isinstance(exc, asyncpg.SerializationError | asyncpg.DeadlockDetectedError):
        return StoreUnavailable(str(exc), "busy")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreUnavailable(f"PostgreSQL says: {exc}: create it (docs/deploy.md) or fix --db", "unreachable")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
        fix = "create the role (docs/deploy.md) or fix the user or password in --db"
        return StoreUnavailable(f"PostgreSQL refused the login: {exc}: {fix}", "unreachable")
    if isinstance(exc, OSError):  # a TimeoutError, one too, is told above
        reason = exc.strerror or str(exc) or type(exc).__name__
        return StoreUnavailable(f"cannot connect to PostgreSQL: {reason}: is it running there?", "unreachable")
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        # PostgreSQL's (or the driver's) own words say what went wrong; the class name would not.
        return StoreUnavailable(f"the database is unreachable: {exc}", "unreachable")
    return None


class Database:
    """A pool of ``pool_size`` connections to ``url``, each statement cut off after ``statement_timeout``."""

    def __init__(
        self,
        url: PostgresUrl,
        *,
        pool_size: int,
        statement_timeout: float,
        observe: Observer | None = None,
        together: Together[PostgresDb] | None = None,
        grouped_begin: str = "",
    ) -> None:
        self.url = url
        self._pool_size = pool_size
        self._timeout = statement_timeout
        self._observe = observe or (lambda seconds, error: None)
        # Made by `start`: a loop holds sockets from birth, and a store built but never opened (an app whose
        # lifespan never ran) would leave them to the garbage collector.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: asyncpg.Pool | None = None
        self._listening: asyncio.Task[None] | None = None
        #: Grouped writes handed over from the callers' loops, and whether the store's loop was woken for them.
        self._inbox: collections.deque[tuple[Operation[Any], asyncio.Future[Any], asyncio.AbstractEventLoop]] = (
            collections.deque()
        )
        self._inbox_woken = False
        #: Their answers, by the caller's loop, until the batch's are all in.
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], asyncio.Future[Any]]]] = {}
        #: Ingest and delivery bookkeeping share transactions (`relay.store.postgres.group`), their statements
        #: run ``together`` (`relay.store.postgres.lockstep`), after ``grouped_begin`` in BEGIN's round trip.
        begin = f"BEGIN; {grouped_begin}" if grouped_begin else None
        self._group: GroupCommit[PostgresDb] = GroupCommit(
            lambda work: self.run(lambda conn: work(PostgresDb(conn)), write=True, begin=begin),
            together=together,
            refill=self._submit_inbox,
        )

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay-postgres", daemon=True)
        self._thread.start()
        self._pool = self.call(self._create_pool())

    def stop(self) -> None:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _create_pool(self) -> asyncpg.Pool:
        # min_size 0: nothing connects until needed, and a broken connection is simply replaced.
        return await asyncpg.create_pool(
            self.url.url,
            min_size=0,
            max_size=self._pool_size,
            command_timeout=self._timeout + 1,
            timeout=self._timeout,
            server_settings={"statement_timeout": str(int(self._timeout * 1000)), "application_name": "cos-relay"},
            reset=_keep_session,
            init=_compress_with_lz4,
        )

    async def _close(self) -> None:
        await self._group.close()
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(BaseException):
                await self._listening
        if self._pool is not None:
            await asyncio.wait_for(self._pool.close(), timeout=5)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the store's loop and wait for it (from any thread but that loop's)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._started()).result()

    async def acall(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the store's loop and await it from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._started()))

    def _started(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the PostgreSQL store was used before open()")
        return self._loop

    async def run(self, work: Work[T], *, write: bool, begin: str | None = None) -> T:
        """``work`` on a pooled connection: in a transaction when it writes, begun by ``begin`` if given (statements
        without parameters, sent at once) rather than asyncpg's own BEGIN. Driver failures leave as `StoreError`."""
        assert self._pool is not None
        started = time.perf_counter()
        try:
            async with self._pool.acquire(timeout=self._timeout) as proxy:
                conn: asyncpg.Connection = proxy  # type: ignore[assignment]  # the proxy forwards every call
                if not write:
                    return await work(conn)
                if begin is not None:
                    result = await _transaction(conn, begin, work)
                else:
                    async with conn.transaction():
                        result = await work(conn)
        except Exception as exc:
            error = failure(exc)
            if error is None:
                raise
            if write:
                self._observe(time.perf_counter() - started, getattr(error, "kind", "other"))
                logger.error("write transaction failed: %s", error, extra={"action": "store_write_failed"})
            raise error from exc
        self._observe(time.perf_counter() - started, None)
        return result

    async def run_grouped(self, operation: Operation[T]) -> T:
        """``operation`` in a transaction it may share with other writes queued meanwhile (group commit).

        Handed over and answered in bulk: the store's loop is woken only when no batch is under way (the next
        batch takes what was handed over meanwhile), and each caller's loop once per batch, not each way once
        per write (waking a loop is a system call made holding the GIL, and each made the threads contend)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        self._inbox.append((operation, answer, loop))
        if not (self._inbox_woken or self._group.busy):
            self._inbox_woken = True
            self._started().call_soon_threadsafe(self._take_inbox)
        return await answer

    def _take_inbox(self) -> None:
        self._inbox_woken = False  # before taking: a write handed over from now on wakes the loop again
        self._submit_inbox()

    def _submit_inbox(self) -> None:
        """On the store's loop: queue every write handed over for group commit."""
        while self._inbox:
            operation, answer, loop = self._inbox.popleft()
            self._group.submit(operation).add_done_callback(functools.partial(self._reply, answer, loop))

    def _reply(self, answer: asyncio.Future[Any], loop: asyncio.AbstractEventLoop, done: asyncio.Future[Any]) -> None:
        if not self._outbox:
            self._started().call_soon(self._send_replies)  # once the whole batch is done
        self._outbox.setdefault(loop, []).append((answer, done))

    def _send_replies(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, replies in outbox.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is left waiting
                loop.call_soon_threadsafe(_settle, replies)

    async def run_urgent(self, work: Work[T]) -> T:
        """``work`` in a transaction of its own, ahead of the grouped writes (`GroupCommit.urgent`)."""
        return await self.acall(self._group.urgent(self.run(work, write=True)))

    def run_sync(self, work: Work[T], *, write: bool) -> T:
        return self.call(self.run(work, write=write))

    async def run_async(self, work: Work[T], *, write: bool) -> T:
        return await self.acall(self.run(work, write=write))

    def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever any replica notifies ``CHANNEL``; keep listening across reconnects."""

        async def start() -> None:
            self._listening = asyncio.ensure_future(self._listen(wake))

        self.call(start())

    async def _listen(self, wake: Callable[[], None]) -> None:
        while True:
            await self._listen_once(wake)
            await asyncio.sleep(RELISTEN)

    async def _listen_once(self, wake: Callable[[], None]) -> None:
        """Listen on one connection until it breaks (or cannot be opened)."""
        broken = asyncio.Event()
        try:
            conn = await asyncpg.connect(self.url.url, timeout=self._timeout)
        except Exception as exc:  # unreachable: polling covers the gap; try again shortly
            logger.debug("cannot listen for new work: %s", exc, extra={"action": "listen_failed"})
            return
        try:
            conn.add_termination_listener(lambda _: broken.set())
            await conn.add_listener(CHANNEL, lambda *_: wake())
            wake()  # work may have been queued while nobody listened
            await broken.wait()
        except Exception as exc:
            logger.debug("listening broke: %s", exc, extra={"action": "listen_failed"})
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)


def _settle(replies: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]]) -> None:
    """On the caller's loop: each write's answer as the store's loop had it."""
    for answer, done in replies:
        error = None if done.cancelled() else done.exception()
        if answer.done():  # its caller gave up waiting (the write was made all the same)
            continue
        if done.cancelled():
            answer.cancel()
        elif error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(done.result())


async def _transaction(conn: asyncpg.Connection, begin: str, work: Work[T]) -> T:
    """``work`` in a transaction ``begin`` opens (its statements one round trip, as a simple query)."""
    try:
        await conn.execute(begin)
        result = await work(conn)
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):  # broken meanwhile: the pool throws the connection away
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")
    return result


async def _compress_with_lz4(conn: asyncpg.Connection) -> None:
    """Large values (a callback's body, an event's, a job's detail) compressed by lz4 instead of PostgreSQL's
    default pglz, where the server has it (PostgreSQL 14 and later, built with lz4; else nothing changes): the
    server's CPU a callback fell from 0.73 to 0.55 ms, the bytes stored per callback within 4% either way
    (docs/performance.md). Only new values: those stored before stay as they are, readable as ever."""
    await conn.execute(
        "SELECT set_config(name, 'lz4', false) FROM pg_settings"
        " WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset on a released connection beyond what the pool always does (roll back an open
    transaction, drop listeners): the store's only session state is its compression (`_compress_with_lz4`,
    kept on purpose; its advisory locks are transaction-level, it LISTENs on a connection of its own), so
    asyncpg's reset query (``RESET ALL``, ``UNLISTEN *``...) would be a round trip per transaction for nothing."""


def rowcount(status: str) -> int:
    """Rows an INSERT, UPDATE or DELETE touched, from asyncpg's status line ("UPDATE 3"); 0 for one that
    counts none ("NOTIFY")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders numbered as PostgreSQL's ``$1, $2, ...`` (the shared SQL has no ``?``
    of its own: no JSON operator, none in a literal)."""
    parts = sql.split("?")
    return "".join(f"{part}${number}" for number, part in enumerate(parts[:-1], 1)) + parts[-1]


class PostgresDb:
    """`relay.store.db.Db` on an asyncpg connection."""

    dialect: Dialect = POSTGRES

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @property
    def connection(self) -> asyncpg.Connection:
        return self._conn

    async def execute(self, sql: str, *args: object) -> int:
        return rowcount(await self._conn.execute(numbered(sql), *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._conn.executemany(numbered(sql), rows)

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        return await self._conn.fetch(numbered(sql), *args)

    async def fetchrow(self, sql: str, *args: object) -> asyncpg.Record | None:
        return await self._conn.fetchrow(numbered(sql), *args)

    async def fetchval(self, sql: str, *args: object) -> Any:
        return await self._conn.fetchval(numbered(sql), *args)


def work(operation: Operation[T]) -> Work[T]:
    """``operation`` as work for a pooled connection."""
    return lambda conn: operation(PostgresDb(conn))
