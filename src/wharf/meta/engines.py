"""How transactions reach the database: plain functions over a connection, run off the
event loop. SQLite gets its own driver on threads; other databases SQLAlchemy's async engine."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import create_async_engine

T = TypeVar("T")


def async_url(url: str) -> str:
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"database.url: unsupported database {backend!r} (use sqlite or postgresql)")


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun by hand below, so that writers take the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")  # first: the others may need to wait
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A writer that began deferred could fail to upgrade its lock (SQLITE_BUSY without
        # waiting); BEGIN IMMEDIATE makes it wait its turn instead.
        immediate = connection.get_execution_options().get("wharf_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database(Protocol):
    """Runs a transaction, written as a plain function over a connection, off the event loop."""

    async def write(self, work: Callable[[sa.Connection], T]) -> T: ...

    async def read(self, work: Callable[[sa.Connection], T]) -> T: ...

    async def close(self) -> None: ...


class ThreadedSQLite:
    """SQLite through its own driver on threads: a transaction is one hand-off, not one per
    statement (measured: 0.9 ms to link a blob, 3.9 ms through aiosqlite). One
    thread writes, since SQLite has one writer at a time anyway; two threads read."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        _configure_sqlite(self.engine)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="wharf-db-write")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="wharf-db-read")

    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        with self.engine.connect() as conn:
            conn = conn.execution_options(wharf_write=True)
            with conn.begin():
                return work(conn)

    def _read(self, work: Callable[[sa.Connection], T]) -> T:
        with self.engine.connect() as conn:
            return work(conn)

    async def write(self, work: Callable[[sa.Connection], T]) -> T:
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


class AsyncEngineDatabase:
    """Any other database through SQLAlchemy's async engine (asyncpg for PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.engine = create_async_engine(async_url(url), pool_size=10, max_overflow=20, pool_pre_ping=True)

    async def write(self, work: Callable[[sa.Connection], T]) -> T:
        # Transactions are short and touch few rows, but two replicas can still cross: a
        # deadlock or serialization failure rolls back whole, so the transaction runs again.
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
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
