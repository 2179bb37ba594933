"""Blobs, their links to repositories, and uploads in progress, on SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa

from .. import schema as s
from ..blobs import IdleUpload, TooManyUploads, Upload
from ..clock import aware as _aware
from ..clock import now as _now
from ..events import Event
from .base import IN_BATCH, SQL, batches, readable_in
from .events import record
from .reads import READABLE_SIZE, UPLOAD


class _MountLost(Exception):
    """The mounted blob went between the check and the lock: the transaction rolls back."""


class SQLBlobRows:
    def __init__(self, sql: SQL) -> None:
        self._sql = sql
        self._db = sql.db

    async def readable_size(self, repository: str, digest: str) -> int | None:
        row = await self._sql.reader.first(READABLE_SIZE, repository=repository, digest=digest)
        return None if row is None else int(row[0])

    async def link(
        self,
        repository: str,
        digest: str,
        size: int,
        event: Event | None = None,
        finished_upload: str | None = None,
    ) -> None:
        now = _now()

        def tx(conn: sa.Connection) -> None:
            if finished_upload is not None:
                conn.execute(s.uploads.delete().where(s.uploads.c.id == finished_upload))
            repo_id = self._sql.repository_id(conn, repository, create=True)
            insert = self._sql.insert(s.blobs).values(
                digest=digest, size=size, created_at=now, last_seen_at=now
            )
            conn.execute(insert.on_conflict_do_update(index_elements=["digest"], set_={"last_seen_at": now}))
            conn.execute(
                self._sql.insert(s.repository_blobs)
                .values(repository_id=repo_id, digest=digest, created_at=now)
                .on_conflict_do_nothing()
            )
            if event is not None:
                record(conn, event)

        return await self._db.write(tx)

    async def unlink(self, repository: str, digest: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            repo_id = self._sql.repository_id(conn, repository)
            if repo_id is None:
                return False
            result = conn.execute(
                s.repository_blobs.delete().where(
                    s.repository_blobs.c.repository_id == repo_id, s.repository_blobs.c.digest == digest
                )
            )
            if result.rowcount:
                record(conn, event)
            return bool(result.rowcount)

        return await self._db.write(tx)

    async def touch(self, repository: str, digest: str) -> int | None:
        def tx(conn: sa.Connection) -> int | None:
            repo_id = self._sql.repository_id(conn, repository)
            if repo_id is None:
                return None
            b = s.blobs
            size: int | None = conn.scalar(
                b.update()
                .where(b.c.digest == digest, readable_in(repo_id, b.c.digest))
                .values(last_seen_at=_now())
                .returning(b.c.size)
            )
            return size

        return await self._db.write(tx)

    async def mount(self, repository: str, source: str, digest: str, event: Event) -> int | None:
        b = s.blobs

        def tx(conn: sa.Connection) -> int | None:
            source_id = self._sql.repository_id(conn, source)
            if source_id is None:
                return None
            readable = readable_in(source_id, b.c.digest)
            if conn.scalar(sa.select(b.c.size).where(b.c.digest == digest, readable)) is None:
                return None
            # Row locks in the order every writer takes them: the repository's row (created),
            # then the blob's. The blob's is taken by one UPDATE, not a shared lock upgraded
            # later: two mounts that both held a shared lock and then both asked to update
            # deadlocked (PostgreSQL's 40P01), and did again on every retry.
            now = _now()
            repo_id = self._sql.repository_id(conn, repository, create=True)
            # Held until the link is in: a collection of this blob waits, then sees it
            # (last_seen_at is fresh); one that came first leaves no row to update.
            size: int | None = conn.scalar(
                b.update().where(b.c.digest == digest, readable).values(last_seen_at=now).returning(b.c.size)
            )
            if size is None:
                raise _MountLost  # collected meanwhile: undo the repository this made
            conn.execute(
                self._sql.insert(s.repository_blobs)
                .values(repository_id=repo_id, digest=digest, created_at=now)
                .on_conflict_do_nothing()
            )
            record(conn, event)
            return size

        try:
            return await self._db.write(tx)
        except _MountLost:
            return None

    # -- uploads ----------------------------------------------------------------------------

    async def create_upload(self, upload_id: str, repository: str, limit: int | None = None) -> Upload:
        now = _now()
        u = s.uploads

        def tx(conn: sa.Connection) -> None:
            if limit is not None:
                held = sa.select(sa.func.count()).select_from(u).where(u.c.repository == repository)
                open_uploads = int(conn.scalar(held) or 0)
                if open_uploads >= limit:
                    raise TooManyUploads(open_uploads)
            conn.execute(
                s.uploads.insert().values(
                    id=upload_id, repository=repository, offset=0, started_at=now, updated_at=now
                )
            )

        await self._db.write(tx)
        return Upload(upload_id, repository, 0)

    async def get_upload(self, upload_id: str) -> Upload | None:
        row = await self._sql.reader.first(UPLOAD, upload_id=upload_id)
        return None if row is None else Upload(row[0], row[1], int(row[2]))

    async def set_upload_offset(self, upload_id: str, expected: int, offset: int) -> bool:
        def tx(conn: sa.Connection) -> bool:
            result = conn.execute(
                s.uploads.update()
                .where(s.uploads.c.id == upload_id, s.uploads.c.offset == expected)
                .values(offset=offset, updated_at=_now())
            )
            return bool(result.rowcount)

        return await self._db.write(tx)

    async def delete_upload(self, upload_id: str) -> bool:
        def tx(conn: sa.Connection) -> bool:
            result = conn.execute(s.uploads.delete().where(s.uploads.c.id == upload_id))
            return bool(result.rowcount)

        return await self._db.write(tx)

    async def idle_uploads(self, before: datetime) -> list[IdleUpload]:
        u = s.uploads
        query = sa.select(u.c.id, u.c.repository, u.c.offset, u.c.updated_at)
        query = query.where(u.c.updated_at < before).order_by(u.c.updated_at, u.c.id)

        def tx(conn: sa.Connection) -> list[IdleUpload]:
            return [
                IdleUpload(row.id, row.repository, int(row.offset), _aware(row.updated_at))
                for row in conn.execute(query)
            ]

        return await self._db.read(tx)

    async def purge_upload(self, upload_id: str, before: datetime) -> bool:
        u = s.uploads

        def tx(conn: sa.Connection) -> bool:
            result = conn.execute(u.delete().where(u.c.id == upload_id, u.c.updated_at < before))
            return bool(result.rowcount)

        return await self._db.write(tx)

    # -- rows, as collections and checks ask for them -----------------------------------------

    async def present(self, digests: Collection[str]) -> set[str]:
        wanted = set(digests)

        def tx(conn: sa.Connection) -> set[str]:
            if len(wanted) > IN_BATCH * 4:
                # Most of the table: one pass over it beats many lookups.
                return wanted.intersection(conn.scalars(sa.select(s.blobs.c.digest)))
            known: set[str] = set()
            for batch in batches(sorted(wanted)):
                known.update(conn.scalars(sa.select(s.blobs.c.digest).where(s.blobs.c.digest.in_(batch))))
            return known

        return await self._db.read(tx)

    async def count(self) -> int:
        def tx(conn: sa.Connection) -> int:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(s.blobs)) or 0)

        return await self._db.read(tx)

    async def last_seen(self, digests: Collection[str]) -> datetime | None:
        b = s.blobs
        wanted = sorted(set(digests))

        def tx(conn: sa.Connection) -> datetime | None:
            latest: datetime | None = None
            for batch in batches(wanted):
                seen = conn.scalar(sa.select(sa.func.max(b.c.last_seen_at)).where(b.c.digest.in_(batch)))
                if seen is not None and (latest is None or _aware(seen) > latest):
                    latest = _aware(seen)
            return latest

        return await self._db.read(tx)

    async def sizes(self, digests: Collection[str]) -> dict[str, int]:
        wanted = sorted(set(digests))

        def tx(conn: sa.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for batch in batches(wanted):
                query = sa.select(s.blobs.c.digest, s.blobs.c.size).where(s.blobs.c.digest.in_(batch))
                found.update((digest, int(size)) for digest, size in conn.execute(query))
            return found

        return await self._db.read(tx)

    async def links(self, digests: Collection[str]) -> dict[str, tuple[str, ...]]:
        rb, r = s.repository_blobs, s.repositories
        wanted = sorted(set(digests))

        def tx(conn: sa.Connection) -> dict[str, tuple[str, ...]]:
            found: dict[str, list[str]] = {}
            for batch in batches(wanted):
                query = sa.select(rb.c.digest, r.c.name).join(r).where(rb.c.digest.in_(batch))
                for digest, name in conn.execute(query):
                    found.setdefault(digest, []).append(name)
            return {digest: tuple(sorted(names)) for digest, names in found.items()}

        return await self._db.read(tx)
