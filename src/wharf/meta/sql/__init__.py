"""The metadata store on SQLAlchemy Core: SQLite (default) and, with the same code, PostgreSQL.

One module per domain (``blobs``, ``manifests``, ``gc`` with ``gc_runs``, ``events``, ``jobs``,
``accounts``),
each a class over the shared plumbing in ``base``; the store builds them and holds what spans
them (digest sections, the GC lock).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

from .. import schema as s
from ..engines import AsyncEngineDatabase, Database, HeldLock, ThreadedSQLite, run_in_section
from . import reads
from .accounts import SQLAccountStore
from .base import SQL
from .blobs import SQLBlobRows
from .events import SQLEventLog
from .gc import SQLGCRows
from .jobs import SQLJobStore
from .manifests import SQLManifestRows

T = TypeVar("T")


class SQLMetadataStore:
    """MetadataStore over SQLAlchemy Core; transactions are plain functions over a connection."""

    def __init__(self, url: str, durable: bool = True) -> None:
        self.url = url
        parsed = sa.engine.make_url(url)
        self.dialect = parsed.get_backend_name()
        self._db: Database
        self.reader: reads.Reader
        if self.dialect == "sqlite":
            database = parsed.database
            on_disk = bool(database and database != ":memory:")
            # Every process on this database finds the same lock files beside it.
            locks = Path(f"{database}-locks") if on_disk else None
            threaded = ThreadedSQLite(str(parsed.set(drivername="sqlite")), locks, durable)
            self._db = threaded
            if database and on_disk:
                self.reader = reads.SQLiteReader(database)
            else:
                self.reader = reads.ThreadReader(threaded.read)
        else:
            engine = AsyncEngineDatabase(url)
            self._db = engine
            self.reader = reads.EngineReader(engine.engine)
        sql = SQL(self._db, self.dialect, self.reader)
        self.blobs = SQLBlobRows(sql)
        self.manifests = SQLManifestRows(sql)
        self.gc = SQLGCRows(sql)
        self.events = SQLEventLog(sql)
        self.jobs = SQLJobStore(sql)
        self.accounts = SQLAccountStore(sql)

    async def close(self) -> None:
        self.reader.close()
        await self._db.close()

    async def ping(self) -> None:
        def tx(conn: sa.Connection) -> None:
            conn.execute(sa.select(s.repositories.c.id).limit(1)).all()

        await self._db.read(tx)

    async def digest_section(self, digests: Collection[str], body: Callable[[], Awaitable[T]]) -> T:
        return await run_in_section(lambda: self._db.section(digests), body)

    async def digest_section_held(self) -> bool:
        return await self._db.section_held()

    def gc_lock(self) -> AbstractAsyncContextManager[HeldLock]:
        return self._db.exclusive("gc")
