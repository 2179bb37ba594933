"""The hot reads (manifest and blob lookups), compiled once and run without the async engine.

Every manifest GET and blob HEAD is one of these lookups, so they skip SQLAlchemy's per-call
machinery: on SQLite a read-only connection of this process answers in microseconds, inline
(WAL readers never wait for writers); other databases go through the async engine.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

from .. import schema as s
from .base import readable_in

_m, _r, _t, _b = s.manifests, s.repositories, s.tags, s.blobs
_manifest_columns = (_m.c.digest, _m.c.media_type, _m.c.payload)

MANIFEST_BY_DIGEST = (
    sa.select(*_manifest_columns)
    .join(_r)
    .where(_r.c.name == sa.bindparam("repository"), _m.c.digest == sa.bindparam("digest"))
)
MANIFEST_BY_TAG = (
    sa.select(*_manifest_columns)
    .select_from(
        _t.join(_r).join(_m, sa.and_(_m.c.repository_id == _t.c.repository_id, _m.c.digest == _t.c.digest))
    )
    .where(_r.c.name == sa.bindparam("repository"), _t.c.name == sa.bindparam("tag"))
)
# The repository named by the ``repository`` parameter; the rule is ``base.readable_in``.
_named_repository = sa.select(_r.c.id).where(_r.c.name == sa.bindparam("repository")).scalar_subquery()
READABLE_SIZE = sa.select(_b.c.size).where(
    _b.c.digest == sa.bindparam("digest"), readable_in(_named_repository, _b.c.digest)
)
UPLOAD = sa.select(s.uploads.c.id, s.uploads.c.repository, s.uploads.c.offset).where(
    s.uploads.c.id == sa.bindparam("upload_id")
)


class Reader(Protocol):
    async def first(self, query: sa.Select[Any], **params: Any) -> tuple[Any, ...] | None: ...

    def close(self) -> None: ...


class EngineReader:
    """Reads through the async engine: any database SQLAlchemy speaks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def first(self, query: sa.Select[Any], **params: Any) -> tuple[Any, ...] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(query, params)).first()
        return None if row is None else tuple(row)

    def close(self) -> None:
        pass


class ThreadReader:
    """Reads through a function that runs work on a connection (an in-memory SQLite database)."""

    def __init__(self, run: Callable[[Callable[[sa.Connection], Any]], Awaitable[Any]]) -> None:
        self.run = run

    async def first(self, query: sa.Select[Any], **params: Any) -> tuple[Any, ...] | None:
        def work(conn: sa.Connection) -> tuple[Any, ...] | None:
            row = conn.execute(query, params).first()
            return None if row is None else tuple(row)

        result: tuple[Any, ...] | None = await self.run(work)
        return result

    def close(self) -> None:
        pass


class SQLiteReader:
    """Reads on a read-only sqlite3 connection of this process, run inline."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._compiled: dict[int, tuple[str, tuple[str, ...]]] = {}

    def _connect(self) -> sqlite3.Connection:
        # Opened on first use: the database may be created after the store is built.
        # Each statement runs as its own snapshot (the cursor is dropped at once), so
        # commits by other processes are seen by the next read.
        if self._connection is None:
            connection = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, check_same_thread=False)
            connection.execute("PRAGMA busy_timeout=5000")
            self._connection = connection
        return self._connection

    def _compile(self, query: sa.Select[Any]) -> tuple[str, tuple[str, ...]]:
        found = self._compiled.get(id(query))
        if found is None:
            compiled = query.compile(dialect=sqlite_dialect.dialect())
            found = (str(compiled), tuple(compiled.positiontup or ()))
            self._compiled[id(query)] = found
        return found

    async def first(self, query: sa.Select[Any], **params: Any) -> tuple[Any, ...] | None:
        sql, names = self._compile(query)
        row: tuple[Any, ...] | None = self._connect().execute(sql, tuple(params[n] for n in names)).fetchone()
        return row

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
