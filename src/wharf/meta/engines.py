"""How transactions reach the database: plain functions over a connection, run off the
event loop. SQLite gets its own driver on threads; other databases SQLAlchemy's async engine."""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import hashlib
import os
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event

if TYPE_CHECKING:  # the async engine is imported only for a server database (it is slow to import)
    from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")


def async_url(url: str) -> str:
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"database.url: unsupported database {backend!r} (use sqlite or postgresql)")


def _configure_sqlite(engine: sa.Engine, durable: bool) -> None:
    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun by hand below, so that writers take the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")  # first: the others may need to wait
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns. With NORMAL (WAL) a power loss may undo
        # commits already answered: an acknowledged push, or a collection's row delete whose
        # file unlink survived (a row without bytes). Measured here: 2.1 ms a commit, 0.1 ms
        # with NORMAL; storage.fsync: false (no durability asked for) keeps NORMAL.
        cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A writer that began deferred could fail to upgrade its lock (SQLITE_BUSY without
        # waiting); BEGIN IMMEDIATE makes it wait its turn instead.
        immediate = connection.get_execution_options().get("wharf_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class HeldLock:
    """What ``exclusive`` yields: true when this holder got the lock. ``lost`` says whether
    a lock once held has gone since (on PostgreSQL a session lock goes with its connection,
    say when the backend is terminated); a holder doing long work asks it now and then."""

    def __init__(self, held: bool, probe: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.held = held
        self._probe = probe
        self.gone = False

    def __bool__(self) -> bool:
        return self.held

    async def lost(self) -> bool:
        if self.held and not self.gone and self._probe is not None:
            self.gone = not await self._probe()
        return self.gone


class Database(Protocol):
    """Runs a transaction, written as a plain function over a connection, off the event loop."""

    async def write(self, work: Callable[[sa.Connection], T], apart: bool = False) -> T:
        """``apart``: not on a section's own connection even inside one (a write that must
        get through when the section's connection has gone)."""

    async def read(self, work: Callable[[sa.Connection], T]) -> T: ...

    def section(self, keys: Iterable[str]) -> AbstractAsyncContextManager[None]:
        """Hold every key's lock (across processes and, on a server database, across
        machines) until the block ends. Writes inside the block may rely on it."""

    def exclusive(self, name: str) -> AbstractAsyncContextManager[HeldLock]:
        """Try to become the only holder of ``name``; yields a false handle at once when
        another is."""

    async def section_held(self) -> bool:
        """Inside a ``section``: whether its locks are still held."""

    async def close(self) -> None: ...


# How long a waiter sleeps between tries at most: locks here are held for milliseconds.
LOCK_POLL_MAX = 0.02


async def run_in_section(
    section: Callable[[], AbstractAsyncContextManager[None]], body: Callable[[], Awaitable[T]]
) -> T:
    """Run ``body`` holding ``section``'s locks, and release them only once ``body`` has
    ended, whatever cancels the caller.

    The locks are taken and the body run in a task of their own, which nothing here
    cancels: every await in the body (a storage thread deleting bytes, the SQLite writer
    thread recording a row) ends before the locks go. A caller cancelled while the locks
    are still being taken waits for them, then lets them go without running the body
    (taking them is not cancelled half way: on PostgreSQL that could leave a lock on a
    pooled connection). The caller's cancellation is passed on once the task has ended.
    """
    abandoned = False

    async def whole() -> T:
        async with section():
            if abandoned:
                raise asyncio.CancelledError
            return await body()

    task = asyncio.create_task(whole())
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as error:
            abandoned = True
            cancelled = error
    if cancelled is not None:
        if not task.cancelled() and task.exception() is not None:
            raise cancelled from task.exception()
        raise cancelled
    return task.result()


class FileLocks:
    """Key locks for one machine: flock(2) on one of 256 files per key, which every
    process (and every open of the file within one process) contends for."""

    SHARDS = 256

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory or Path(tempfile.mkdtemp(prefix="wharf-locks-"))
        self.directory.mkdir(parents=True, exist_ok=True)

    def _shard(self, key: str) -> str:
        return f"{hashlib.blake2b(key.encode(), digest_size=2).digest()[0]:02x}"

    @asynccontextmanager
    async def section(self, keys: Iterable[str]) -> AsyncIterator[None]:
        # Always in the same order, so two holders of several keys cannot deadlock.
        shards = sorted({self._shard(key) for key in keys})
        held: list[int] = []
        try:
            for shard in shards:
                fd = os.open(self.directory / shard, os.O_RDWR | os.O_CREAT, 0o644)
                held.append(fd)
                # Polled, not blocked on a thread: a cancelled waiter must leave nothing behind.
                delay = 0.0005
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, LOCK_POLL_MAX)
            yield
        finally:
            for fd in held:
                os.close(fd)  # releases the lock with the file

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[HeldLock]:
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield HeldLock(False)
                return
            yield HeldLock(True)  # held until the file is closed here: it cannot be lost
        finally:
            os.close(fd)


class ThreadedSQLite:
    """SQLite through its own driver on threads: a transaction is one hand-off, not one per
    statement (measured: 0.9 ms to link a blob, 3.9 ms through aiosqlite). One
    thread writes, since SQLite has one writer at a time anyway; two threads read."""

    def __init__(self, url: str, lock_directory: Path | None = None, durable: bool = True) -> None:
        self.engine = sa.create_engine(url)
        _configure_sqlite(self.engine, durable)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="wharf-db-write")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="wharf-db-read")
        self._locks = FileLocks(lock_directory)

    def section(self, keys: Iterable[str]) -> AbstractAsyncContextManager[None]:
        return self._locks.section(keys)

    def exclusive(self, name: str) -> AbstractAsyncContextManager[HeldLock]:
        return self._locks.exclusive(name)

    async def section_held(self) -> bool:
        return True  # flock(2) goes only with this process

    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        with self.engine.connect() as conn:
            conn = conn.execution_options(wharf_write=True)
            with conn.begin():
                return work(conn)

    def _read(self, work: Callable[[sa.Connection], T]) -> T:
        with self.engine.connect() as conn:
            return work(conn)

    async def write(self, work: Callable[[sa.Connection], T], apart: bool = False) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._write, work)

    async def read(self, work: Callable[[sa.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._read, work)

    async def close(self) -> None:
        self._writer.shutdown()
        self._readers.shutdown()
        self.engine.dispose()


WRITE_ATTEMPTS = 5
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def _sqlstate(error: sa.exc.DBAPIError) -> str | None:
    original = error.orig
    return getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)


def _advisory_key(key: str) -> int:
    """A key's PostgreSQL advisory lock id (the one-bigint key space; ``exclusive`` uses
    the two-integer space, which PostgreSQL keeps apart)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


# The connection a section holds its locks on, for the writes inside the section.
_section_connection: contextvars.ContextVar[AsyncConnection | None] = contextvars.ContextVar(
    "wharf_section_connection", default=None
)
# The backend (session) that took the section's locks: a reconnected connection is another.
_section_backend: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "wharf_section_backend", default=None
)
# ``exclusive`` names, as the second integer of a two-integer advisory lock.
EXCLUSIVE_CLASS = 0x57484652  # "WHFR"
EXCLUSIVE_IDS = {"gc": 1}
# An ``exclusive`` lock's holder asks whether it still holds it; no answer within this
# long counts as no (a connection that cannot answer cannot be trusted to hold a lock).
EXCLUSIVE_PROBE_TIMEOUT = 10.0
# Whether this session still holds a two-integer advisory lock (objsubid 2 marks that key space).
_HOLDS_EXCLUSIVE = sa.text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
    " AND pid = pg_backend_pid() AND classid::bigint = :c AND objid::bigint = :i"
)


class AsyncEngineDatabase:
    """Any other database through SQLAlchemy's async engine (asyncpg for PostgreSQL)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(async_url(url), pool_size=10, max_overflow=20, pool_pre_ping=True)

    @asynccontextmanager
    async def section(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Session advisory locks, taken in one order on a connection of the section's own;
        writes inside the section run on that connection (so a section costs one
        connection, not two), and the locks go with it if the process dies."""
        ids = sorted({_advisory_key(key) for key in keys})
        async with self.engine.connect() as conn:
            taken = await conn.execute(
                sa.text(
                    "SELECT pg_backend_pid(), pg_advisory_lock(k) FROM "
                    "(SELECT k FROM unnest(CAST(:ids AS bigint[])) AS k ORDER BY k OFFSET 0) AS ordered"
                ),
                {"ids": ids},
            )
            backend = taken.first()
            await conn.commit()
            token = _section_connection.set(conn)
            session = _section_backend.set(None if backend is None else int(backend[0]))
            try:
                yield
            finally:
                _section_backend.reset(session)
                _section_connection.reset(token)
                try:
                    await conn.rollback()
                    await conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
                    await conn.commit()
                except (sa.exc.DBAPIError, OSError):
                    # The connection went (and its locks with it): closed for good, not pooled.
                    await conn.invalidate()

    async def section_held(self) -> bool:
        """The section's session advisory locks go with its connection (a terminated
        backend, a dropped link): held while that connection still answers."""
        conn = _section_connection.get()
        if conn is None:
            return False
        try:
            async with asyncio.timeout(EXCLUSIVE_PROBE_TIMEOUT):
                # The same session, not one a reconnect made in its place (which holds nothing).
                backend = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
                await conn.commit()
        except (sa.exc.DBAPIError, sa.exc.InvalidRequestError, OSError, TimeoutError):
            return False
        return backend is not None and backend == _section_backend.get()

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[HeldLock]:
        """A session advisory lock on a connection of its own, kept out of the pool while
        held. It goes with that connection (a terminated backend, a dropped link), so the
        handle's ``lost`` asks on that same connection whether the lock is still this
        session's: one cheap query, which fails when the connection has gone."""
        async with self.engine.connect() as conn:
            params = {"c": EXCLUSIVE_CLASS, "i": EXCLUSIVE_IDS[name]}
            got = bool(await conn.scalar(sa.text("SELECT pg_try_advisory_lock(:c, :i)"), params))
            await conn.commit()

            async def holds() -> bool:
                try:
                    async with asyncio.timeout(EXCLUSIVE_PROBE_TIMEOUT):
                        mine = await conn.scalar(_HOLDS_EXCLUSIVE, params)
                        await conn.commit()
                except (sa.exc.DBAPIError, sa.exc.InvalidRequestError, OSError, TimeoutError):
                    return False
                return bool(mine)

            handle = HeldLock(got, holds)
            try:
                yield handle
            finally:
                if got and handle.gone:
                    # Gone with its connection, or no longer to be trusted: closing the
                    # connection for good ends whatever session may be left of it.
                    await conn.invalidate()
                elif got:
                    try:
                        await conn.execute(sa.text("SELECT pg_advisory_unlock(:c, :i)"), params)
                        await conn.commit()
                    except sa.exc.DBAPIError:
                        # The connection went since the last look: so did the lock with it.
                        await conn.invalidate()

    async def write(self, work: Callable[[sa.Connection], T], apart: bool = False) -> T:
        # Transactions are short and touch few rows, but two replicas can still cross: a
        # deadlock or serialization failure rolls back whole, so the transaction runs again.
        held = None if apart else _section_connection.get()
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                if held is not None:
                    async with held.begin():
                        return await held.run_sync(work)
                async with self.engine.begin() as conn:
                    return await conn.run_sync(work)
            except sa.exc.DBAPIError as error:
                if attempt == WRITE_ATTEMPTS or _sqlstate(error) not in RETRYABLE_SQLSTATES:
                    raise
                await asyncio.sleep(random.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")

    async def read(self, work: Callable[[sa.Connection], T]) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        await self.engine.dispose()
