"""The metadata store on SQLAlchemy Core: SQLite (default) and, with the same code, PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from . import reads
from . import schema as s
from .clock import aware as _aware
from .clock import now as _now
from .engines import AsyncEngineDatabase, Database, HeldLock, ThreadedSQLite, run_in_section
from .jobs import SQLJobStore
from .store import (
    CheckedManifest,
    Event,
    GCManifest,
    GCRun,
    GCTotals,
    IdleUpload,
    ImportedBlob,
    MissingReference,
    NewManifest,
    Referrer,
    RegistrySnapshot,
    StoredManifest,
    TooManyUploads,
    Upload,
)

T = TypeVar("T")


# A row another transaction deletes between our two statements: try again this many times.
ROW_RACE_ATTEMPTS = 3
# Rows per statement when a set of keys goes into IN (...): under every driver's parameter limit.
IN_BATCH = 2000


def _batches(items: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _MountLost(Exception):
    """The mounted blob went between the check and the lock: the transaction rolls back."""


def _readable_in(repo_id: int, digest: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """A blob the repository may read: linked there, or named by one of its manifests."""
    linked = sa.select(s.repository_blobs.c.digest).where(
        s.repository_blobs.c.repository_id == repo_id, s.repository_blobs.c.digest == digest
    )
    referenced = (
        sa.select(s.manifest_blobs.c.digest)
        .join(s.manifests)
        .where(s.manifests.c.repository_id == repo_id, s.manifest_blobs.c.digest == digest)
    )
    return sa.or_(linked.exists(), referenced.exists())


def _gc_run(row: Any) -> GCRun:
    fields = dict(row._mapping)
    for key in ("started_at", "ended_at", "grace_kept_until"):
        if fields[key] is not None:
            fields[key] = _aware(fields[key])
    return GCRun(**fields)


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
        self.jobs = SQLJobStore(self._db, self.dialect, self._insert)

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

    # -- plumbing ---------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql  # imported only where it is used: slow to import

            return postgresql.insert(table)
        return sqlite.insert(table)

    def _ordered(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        # Byte order, whatever the database's locale: the spec asks for lexical order.
        return column.collate("C") if self.dialect == "postgresql" else column

    def _repository_id(self, conn: sa.Connection, name: str, create: bool = False) -> int | None:
        found = conn.scalar(sa.select(s.repositories.c.id).where(s.repositories.c.name == name))
        if found is not None or not create:
            return found
        conn.execute(
            self._insert(s.repositories)
            .values(name=name, created_at=_now())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return conn.scalar(sa.select(s.repositories.c.id).where(s.repositories.c.name == name))

    def _record(self, conn: sa.Connection, event: Event) -> None:
        conn.execute(
            s.events.insert().values(
                at=_now(),
                actor=event.actor,
                action=event.action,
                repository=event.repository,
                reference=event.reference,
                digest=event.digest,
                detail=event.detail,
            )
        )

    def _tag_history(
        self, conn: sa.Connection, repo_id: int, name: str, old: str | None, new: str | None, actor: str
    ) -> None:
        conn.execute(
            s.tag_history.insert().values(
                repository_id=repo_id, name=name, old_digest=old, new_digest=new, actor=actor, at=_now()
            )
        )

    # -- blobs ------------------------------------------------------------------------------

    async def linked_blob_size(self, repository: str, digest: str) -> int | None:
        row = await self.reader.first(reads.LINKED_BLOB_SIZE, repository=repository, digest=digest)
        return None if row is None else int(row[0])

    async def link_blob(
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
            repo_id = self._repository_id(conn, repository, create=True)
            insert = self._insert(s.blobs).values(digest=digest, size=size, created_at=now, last_seen_at=now)
            conn.execute(insert.on_conflict_do_update(index_elements=["digest"], set_={"last_seen_at": now}))
            conn.execute(
                self._insert(s.repository_blobs)
                .values(repository_id=repo_id, digest=digest, created_at=now)
                .on_conflict_do_nothing()
            )
            if event is not None:
                self._record(conn, event)

        return await self._db.write(tx)

    async def unlink_blob(self, repository: str, digest: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            repo_id = self._repository_id(conn, repository)
            if repo_id is None:
                return False
            result = conn.execute(
                s.repository_blobs.delete().where(
                    s.repository_blobs.c.repository_id == repo_id, s.repository_blobs.c.digest == digest
                )
            )
            if result.rowcount:
                self._record(conn, event)
            return bool(result.rowcount)

        return await self._db.write(tx)

    async def touch_blob(self, repository: str, digest: str) -> int | None:
        def tx(conn: sa.Connection) -> int | None:
            repo_id = self._repository_id(conn, repository)
            if repo_id is None:
                return None
            b = s.blobs
            size: int | None = conn.scalar(
                b.update()
                .where(b.c.digest == digest, _readable_in(repo_id, b.c.digest))
                .values(last_seen_at=_now())
                .returning(b.c.size)
            )
            return size

        return await self._db.write(tx)

    async def mount_blob(self, repository: str, source: str, digest: str, event: Event) -> int | None:
        b = s.blobs

        def tx(conn: sa.Connection) -> int | None:
            source_id = self._repository_id(conn, source)
            if source_id is None:
                return None
            readable = _readable_in(source_id, b.c.digest)
            if conn.scalar(sa.select(b.c.size).where(b.c.digest == digest, readable)) is None:
                return None
            # Row locks in the order every writer takes them: the repository's row (created),
            # then the blob's. The blob's is taken by one UPDATE, not a shared lock upgraded
            # later: two mounts that both held a shared lock and then both asked to update
            # deadlocked (PostgreSQL's 40P01), and did again on every retry.
            now = _now()
            repo_id = self._repository_id(conn, repository, create=True)
            # Held until the link is in: a collection of this blob waits, then sees it
            # (last_seen_at is fresh); one that came first leaves no row to update.
            size: int | None = conn.scalar(
                b.update().where(b.c.digest == digest, readable).values(last_seen_at=now).returning(b.c.size)
            )
            if size is None:
                raise _MountLost  # collected meanwhile: undo the repository this made
            conn.execute(
                self._insert(s.repository_blobs)
                .values(repository_id=repo_id, digest=digest, created_at=now)
                .on_conflict_do_nothing()
            )
            self._record(conn, event)
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
        row = await self.reader.first(reads.UPLOAD, upload_id=upload_id)
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

    # -- manifests and tags -----------------------------------------------------------------

    async def put_manifest(
        self, repository: str, manifest: NewManifest, tag: str | None, event: Event
    ) -> None:
        def tx(conn: sa.Connection) -> None:
            repo_id = self._repository_id(conn, repository, create=True)
            assert repo_id is not None
            self._check_references(conn, repo_id, manifest)
            # A concurrent push of the same manifest may win the insert: then it records the
            # references, and this one only tags, holding the row (locked by an update) so that a
            # concurrent delete either waits for this tag or came first and the insert reruns.
            manifest_id = self._claim_manifest(conn, repo_id, manifest)
            if manifest_id is not None:
                self._record_references(conn, manifest_id, manifest)
            if tag is not None:
                self._set_tag(conn, repo_id, tag, manifest.digest, event)
            self._record(conn, event)

        try:
            return await self._db.write(tx)
        except sa.exc.IntegrityError:
            # A blob checked above was collected before its reference went in (PostgreSQL
            # checks the foreign key at the insert): once more, the check now names it.
            return await self._db.write(tx)

    def _check_references(self, conn: sa.Connection, repo_id: int, manifest: NewManifest) -> None:
        # In batches: a 4 MiB manifest can name 40,000 blobs or children, and PostgreSQL takes
        # at most 32,767 parameters a statement (Distribution caps the payload, not the count).
        wanted = sorted(set(manifest.blobs))
        found: set[str] = set()
        for batch in _batches(wanted):
            linked = sa.select(s.repository_blobs.c.digest).where(
                s.repository_blobs.c.repository_id == repo_id, s.repository_blobs.c.digest.in_(batch)
            )
            referenced = (
                sa.select(s.manifest_blobs.c.digest)
                .join(s.manifests)
                .where(s.manifests.c.repository_id == repo_id, s.manifest_blobs.c.digest.in_(batch))
            )
            found.update(row[0] for row in conn.execute(sa.union(linked, referenced)))
        missing = set(wanted) - found
        if missing:
            raise MissingReference("blob", next(d for d in manifest.blobs if d in missing))
        children = sorted(set(manifest.children))
        present: set[str] = set()
        for batch in _batches(children):
            # Held until this transaction ends: a child cannot be deleted under its new index.
            rows = conn.execute(
                sa.select(s.manifests.c.digest)
                .where(s.manifests.c.repository_id == repo_id, s.manifests.c.digest.in_(batch))
                .with_for_update(read=True)
            )
            present.update(row.digest for row in rows)
        if children:
            missing = set(children) - present
            if missing:
                raise MissingReference("manifest", next(d for d in manifest.children if d in missing))

    def _insert_manifest(
        self, conn: sa.Connection, repo_id: int, manifest: NewManifest, now: datetime, seen: datetime | None
    ) -> int | None:
        """Insert the manifest's row unless the repository has it: its new id, or None."""
        m = s.manifests
        created: int | None = conn.scalar(
            self._insert(m)
            .values(
                repository_id=repo_id,
                digest=manifest.digest,
                media_type=manifest.media_type,
                payload=manifest.payload,
                config_digest=manifest.config_digest,
                subject_digest=manifest.subject_digest,
                artifact_type=manifest.artifact_type,
                size=len(manifest.payload),
                created_at=now,
                last_seen_at=seen,
            )
            .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
            .returning(m.c.id)
        )
        return created

    def _record_references(self, conn: sa.Connection, manifest_id: int, manifest: NewManifest) -> None:
        """The blobs and child manifests a newly inserted manifest names."""
        if manifest.blobs:
            conn.execute(
                s.manifest_blobs.insert(),
                # Sorted: the foreign key share-locks each blob row, in the order a
                # collection locks them too (two orders could deadlock).
                [{"manifest_id": manifest_id, "digest": d} for d in sorted(set(manifest.blobs))],
            )
        if manifest.children:
            conn.execute(
                s.manifest_children.insert(),
                [{"parent_id": manifest_id, "child_digest": d} for d in sorted(set(manifest.children))],
            )

    def _claim_manifest(self, conn: sa.Connection, repo_id: int, manifest: NewManifest) -> int | None:
        """Insert the manifest row; its id when this transaction created it, None when it
        exists already (then it is locked against deletion until this transaction ends)."""
        m = s.manifests
        for _attempt in range(ROW_RACE_ATTEMPTS):
            now = _now()
            created = self._insert_manifest(conn, repo_id, manifest, now, seen=now)
            if created is not None:
                return created
            # Pushed again: an untagged manifest's grace period starts over. The update
            # also locks the row (one statement: no shared lock to upgrade, no deadlock).
            held = conn.scalar(
                m.update()
                .where(m.c.repository_id == repo_id, m.c.digest == manifest.digest)
                .values(last_seen_at=_now())
                .returning(m.c.id)
            )
            if held is not None:
                return None
        raise RuntimeError(f"manifest {manifest.digest} kept changing under this transaction")

    def _set_tag(self, conn: sa.Connection, repo_id: int, tag: str, digest: str, event: Event) -> None:
        """Point the tag at ``digest``, recording the move. The tag row is locked before it is
        read, so two replicas moving one tag at once record m1 -> m2 -> m3, not two moves from m1."""
        now = _now()
        t = s.tags
        where = (t.c.repository_id == repo_id, t.c.name == tag)
        for _attempt in range(ROW_RACE_ATTEMPTS):
            created = conn.scalar(
                self._insert(t)
                .values(repository_id=repo_id, name=tag, digest=digest, updated_at=now)
                .on_conflict_do_nothing(index_elements=["repository_id", "name"])
                .returning(t.c.name)
            )
            if created is not None:
                self._tag_history(conn, repo_id, tag, None, digest, event.actor)
                return
            old = conn.scalar(sa.select(t.c.digest).where(*where).with_for_update())
            if old is None:
                continue  # deleted between the two statements: insert again
            if old != digest:
                conn.execute(t.update().where(*where).values(digest=digest, updated_at=now))
                self._tag_history(conn, repo_id, tag, old, digest, event.actor)
                moved = Event(event.actor, "tag.move", event.repository, tag, digest, {"from": old})
                self._record(conn, moved)
            return
        raise RuntimeError(f"tag {tag} kept changing under this transaction")

    async def get_manifest(self, repository: str, reference: str) -> StoredManifest | None:
        if ":" in reference:
            row = await self.reader.first(reads.MANIFEST_BY_DIGEST, repository=repository, digest=reference)
        else:
            row = await self.reader.first(reads.MANIFEST_BY_TAG, repository=repository, tag=reference)
        return None if row is None else StoredManifest(row[0], row[1], bytes(row[2]))

    async def delete_manifest(self, repository: str, digest: str, event: Event) -> list[str] | None:
        def tx(conn: sa.Connection) -> list[str] | None:
            repo_id = self._repository_id(conn, repository)
            if repo_id is None:
                return None
            result = conn.execute(
                s.manifests.delete().where(
                    s.manifests.c.repository_id == repo_id, s.manifests.c.digest == digest
                )
            )
            if not result.rowcount:
                return None
            tag_rows = conn.execute(
                s.tags.delete()
                .where(s.tags.c.repository_id == repo_id, s.tags.c.digest == digest)
                .returning(s.tags.c.name)
            )
            removed = sorted(row.name for row in tag_rows)
            for name in removed:
                self._tag_history(conn, repo_id, name, digest, None, event.actor)
            self._record(conn, Event(**{**event.__dict__, "detail": {"tags": removed}}))
            return removed

        return await self._db.write(tx)

    async def delete_tag(self, repository: str, tag: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            repo_id = self._repository_id(conn, repository)
            if repo_id is None:
                return False
            digest = conn.scalar(
                s.tags.delete()
                .where(s.tags.c.repository_id == repo_id, s.tags.c.name == tag)
                .returning(s.tags.c.digest)
            )
            if digest is None:
                return False
            self._tag_history(conn, repo_id, tag, digest, None, event.actor)
            self._record(conn, Event(**{**event.__dict__, "digest": digest}))
            return True

        return await self._db.write(tx)

    async def import_repository(
        self,
        repository: str,
        blobs: Sequence[ImportedBlob],
        manifests: Sequence[NewManifest],
        tags: dict[str, str],
        event: Event,
    ) -> dict[str, int]:
        def tx(conn: sa.Connection) -> dict[str, int]:
            repo_id = self._repository_id(conn, repository, create=True)
            assert repo_id is not None
            added = {"blobs": 0, "manifests": 0, "tags": 0}
            now = _now()
            for batch in _batches(list(blobs), 500):
                result = conn.execute(
                    self._insert(s.blobs)
                    .values(
                        [
                            {
                                "digest": b.digest,
                                "size": b.size,
                                "created_at": b.modified,
                                "last_seen_at": b.modified,
                            }
                            for b in batch
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=["digest"])
                )
                added["blobs"] += max(result.rowcount, 0)
                links = [{"repository_id": repo_id, "digest": b.digest, "created_at": now} for b in batch]
                conn.execute(self._insert(s.repository_blobs).values(links).on_conflict_do_nothing())
            for manifest in manifests:
                created = self._insert_manifest(conn, repo_id, manifest, now, seen=None)
                if created is None:
                    continue
                added["manifests"] += 1
                self._record_references(conn, created, manifest)
            for tag, digest in sorted(tags.items()):
                created_tag = conn.scalar(
                    self._insert(s.tags)
                    .values(repository_id=repo_id, name=tag, digest=digest, updated_at=now)
                    .on_conflict_do_nothing(index_elements=["repository_id", "name"])
                    .returning(s.tags.c.name)
                )
                if created_tag is not None:
                    added["tags"] += 1
                    self._tag_history(conn, repo_id, tag, None, digest, event.actor)
            if any(added.values()):
                self._record(conn, Event(**{**event.__dict__, "detail": {**(event.detail or {}), **added}}))
            return added

        return await self._db.write(tx)

    async def delete_repository(self, repository: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            repo_id = self._repository_id(conn, repository)
            if repo_id is None:
                return False
            r, m, t = s.repositories, s.manifests, s.tags
            counts = {
                "manifests": conn.scalar(sa.select(sa.func.count()).where(m.c.repository_id == repo_id)),
                "tags": conn.scalar(sa.select(sa.func.count()).where(t.c.repository_id == repo_id)),
            }
            # Everything of the repository goes with its row (foreign keys cascade).
            conn.execute(r.delete().where(r.c.id == repo_id))
            self._record(conn, Event(**{**event.__dict__, "detail": counts}))
            return True

        return await self._db.write(tx)

    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str] | None:
        def tx(conn: sa.Connection) -> list[str] | None:
            repo_id = self._repository_id(conn, repository)
            if repo_id is None:
                return None
            name = self._ordered(s.tags.c.name)
            query = sa.select(s.tags.c.name).where(s.tags.c.repository_id == repo_id).order_by(name)
            if last:
                query = query.where(name > last)
            if limit is not None:
                query = query.limit(limit)
            return list((conn.scalars(query)).all())

        return await self._db.read(tx)

    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        r, m = s.repositories, s.manifests
        name = self._ordered(r.c.name)
        # A repository holds images: one whose last manifest went (or none came yet, only
        # blobs) is not listed, as Distribution lists only repositories with manifests.
        holds = sa.select(m.c.id).where(m.c.repository_id == r.c.id).exists()
        query = sa.select(r.c.name).where(holds).order_by(name)
        if last:
            query = query.where(name > last)
        if limit is not None:
            query = query.limit(limit)

        def tx(conn: sa.Connection) -> list[str]:
            return list((conn.scalars(query)).all())

        return await self._db.read(tx)

    async def referrers(self, repository: str, digest: str, artifact_type: str | None) -> list[Referrer]:
        m, r = s.manifests, s.repositories
        query = (
            sa.select(m.c.digest, m.c.media_type, m.c.size, m.c.artifact_type, m.c.payload)
            .join(r)
            .where(r.c.name == repository, m.c.subject_digest == digest)
            .order_by(m.c.digest)
        )
        if artifact_type is not None:
            query = query.where(m.c.artifact_type == artifact_type)

        def tx(conn: sa.Connection) -> list[Referrer]:
            rows = conn.execute(query)
            return [
                Referrer(row.digest, row.media_type, row.size, row.artifact_type, row.payload) for row in rows
            ]

        return await self._db.read(tx)

    # -- garbage collection -----------------------------------------------------------------

    def _gc_manifest_rows(self, conn: sa.Connection, where: Any | None) -> list[GCManifest]:
        """GC's view of the manifests ``where`` selects (all of them when None)."""
        m, r, t, c = s.manifests, s.repositories, s.tags, s.manifest_children
        tagged = sa.select(t.c.name).where(t.c.repository_id == m.c.repository_id, t.c.digest == m.c.digest)
        query = sa.select(
            m.c.id,
            r.c.name,
            m.c.digest,
            m.c.subject_digest,
            tagged.exists().label("tagged"),
            sa.func.coalesce(m.c.last_seen_at, m.c.created_at).label("seen_at"),
        ).join(r)
        if where is not None:
            query = query.where(where)
        rows = conn.execute(query).all()
        children: dict[int, list[str]] = {}
        if where is None:
            for parent, child in conn.execute(sa.select(c.c.parent_id, c.c.child_digest)):
                children.setdefault(parent, []).append(child)
        else:
            for batch in _batches(sorted(row.id for row in rows)):
                for parent, child in conn.execute(
                    sa.select(c.c.parent_id, c.c.child_digest).where(c.c.parent_id.in_(batch))
                ):
                    children.setdefault(parent, []).append(child)
        return [
            GCManifest(
                row.id,
                row.name,
                row.digest,
                row.subject_digest,
                bool(row.tagged),
                _aware(row.seen_at),
                tuple(children.get(row.id, ())),
            )
            for row in rows
        ]

    async def gc_manifests(self) -> list[GCManifest]:
        def tx(conn: sa.Connection) -> list[GCManifest]:
            return self._gc_manifest_rows(conn, None)

        return await self._db.read(tx)

    async def gc_listing(self) -> list[tuple[int, str, str, tuple[str, ...]]]:
        m, r, mb = s.manifests, s.repositories, s.manifest_blobs
        query = (
            sa.select(m.c.id, r.c.name, m.c.digest)
            .join(r)
            .order_by(self._ordered(r.c.name), self._ordered(m.c.digest))
        )

        def tx(conn: sa.Connection) -> list[tuple[int, str, str, tuple[str, ...]]]:
            blobs: dict[int, list[str]] = {}
            for manifest_id, digest in conn.execute(sa.select(mb.c.manifest_id, mb.c.digest)).tuples():
                blobs.setdefault(manifest_id, []).append(digest)
            return [
                (manifest_id, name, digest, tuple(blobs.get(manifest_id, ())))
                for manifest_id, name, digest in conn.execute(query).tuples()
            ]

        return await self._db.read(tx)

    async def gc_manifest_queue(self) -> dict[int, int]:
        q = s.gc_manifest_review

        def tx(conn: sa.Connection) -> dict[int, int]:
            return {row.manifest_id: row.hits for row in conn.execute(sa.select(q.c.manifest_id, q.c.hits))}

        return await self._db.read(tx)

    async def gc_manifests_around(
        self,
        ids: Collection[int] = (),
        parents_of: Collection[tuple[str, str]] = (),
        keys: Collection[tuple[str, str]] = (),
        referrers_of: Collection[tuple[str, str]] = (),
    ) -> list[GCManifest]:
        m, r, c = s.manifests, s.repositories, s.manifest_children
        selections: list[tuple[Callable[[Sequence[Any]], Any], list[Any]]] = [
            (m.c.id.in_, sorted(set(ids))),
            (
                # Indexes in those repositories listing those digests (a few more at most:
                # an index elsewhere listing the same digest, which costs a row, no harm).
                lambda batch: sa.and_(
                    r.c.name.in_(sorted({name for name, _digest in batch})),
                    m.c.id.in_(
                        sa.select(c.c.parent_id).where(
                            c.c.child_digest.in_(sorted({digest for _name, digest in batch}))
                        )
                    ),
                ),
                sorted(set(parents_of)),
            ),
            (sa.tuple_(r.c.name, m.c.digest).in_, sorted(set(keys))),
            (sa.tuple_(r.c.name, m.c.subject_digest).in_, sorted(set(referrers_of))),
        ]

        def tx(conn: sa.Connection) -> list[GCManifest]:
            found: dict[int, GCManifest] = {}
            for condition, values in selections:
                for batch in _batches(values):
                    for manifest in self._gc_manifest_rows(conn, condition(batch)):
                        found[manifest.id] = manifest
            return list(found.values())

        return await self._db.read(tx)

    async def gc_delete_manifests(
        self, ids: Sequence[int], cutoff: datetime, delete_untagged: bool, actor: str
    ) -> list[int]:
        m, t, c, r = s.manifests, s.tags, s.manifest_children, s.repositories
        parent = m.alias("parent")

        def still_garbage(conn: sa.Connection, rows: list[Any]) -> list[Any]:
            """Those rows that nothing has made live since the plan: no tag, no index listing
            them, their subject gone (or, with delete_untagged, no subject at all)."""
            pairs = [(row.repository_id, row.digest) for row in rows]
            tagged = {
                (row.repository_id, row.digest)
                for row in conn.execute(
                    sa.select(t.c.repository_id, t.c.digest).where(
                        sa.tuple_(t.c.repository_id, t.c.digest).in_(pairs)
                    )
                )
            }
            listed = {
                (row.repository_id, row.child_digest)
                for row in conn.execute(
                    sa.select(parent.c.repository_id, c.c.child_digest)
                    .join(parent, parent.c.id == c.c.parent_id)
                    .where(sa.tuple_(parent.c.repository_id, c.c.child_digest).in_(pairs))
                )
            }
            subjects = [(row.repository_id, row.subject_digest) for row in rows if row.subject_digest]
            present: set[tuple[int, str]] = set()
            if subjects:
                present = {
                    (row.repository_id, row.digest)
                    for row in conn.execute(
                        sa.select(m.c.repository_id, m.c.digest).where(
                            sa.tuple_(m.c.repository_id, m.c.digest).in_(subjects)
                        )
                    )
                }
            return [
                row
                for row in rows
                if (row.repository_id, row.digest) not in tagged
                and (row.repository_id, row.digest) not in listed
                and (row.subject_digest is None or (row.repository_id, row.subject_digest) not in present)
            ]

        def tx(conn: sa.Connection) -> list[int]:
            # Locked first, then everything that could have made them live is read again.
            rows = conn.execute(
                sa.select(
                    m.c.id,
                    m.c.repository_id,
                    m.c.digest,
                    m.c.subject_digest,
                    m.c.created_at,
                    m.c.last_seen_at,
                    r.c.name,
                )
                .join(r)
                .where(m.c.id.in_(list(ids)))
                .with_for_update(of=m)
            ).all()
            order = {manifest_id: position for position, manifest_id in enumerate(ids)}
            rows = sorted(
                (
                    row
                    for row in rows
                    if _aware(row.last_seen_at or row.created_at) < cutoff
                    and (row.subject_digest is not None or delete_untagged)
                ),
                key=lambda row: order[row.id],
            )
            deleted: list[int] = []
            # An index and its children can share a batch: the children become garbage
            # once the index is gone, so look again until a round deletes nothing.
            while rows:
                doomed = still_garbage(conn, rows)
                if not doomed:
                    break
                conn.execute(m.delete().where(m.c.id.in_([row.id for row in doomed])))
                now = _now()
                conn.execute(
                    s.events.insert(),
                    [
                        {"at": now, "actor": actor, "action": "manifest.collect", "repository": row.name}
                        | {"reference": row.digest, "digest": row.digest, "detail": None}
                        for row in doomed
                    ],
                )
                deleted.extend(row.id for row in doomed)
                gone = {row.id for row in doomed}
                rows = [row for row in rows if row.id not in gone]
            return deleted

        return await self._db.write(tx)

    async def gc_blob_candidates(
        self, cutoff: datetime, dropped: Collection[int], full: bool = True
    ) -> tuple[list[tuple[str, int]], dict[str, int]]:
        b, mb, q = s.blobs, s.manifest_blobs, s.gc_blob_review
        named = sa.select(mb.c.digest).where(mb.c.digest == b.c.digest).exists()
        unreferenced = sa.select(b.c.digest, b.c.size).where(b.c.last_seen_at < cutoff, ~named)
        queued = sa.select(q.c.digest, q.c.hits, b.c.size, b.c.last_seen_at, named.label("named")).join(
            b, b.c.digest == q.c.digest
        )
        dropped_ids = sorted(set(dropped))

        def tx(conn: sa.Connection) -> tuple[list[tuple[str, int]], dict[str, int]]:
            found: dict[str, int] = {}
            reviewed: dict[str, int] = {}  # queued, and named by a manifest: kept until it goes
            if full:
                found.update((row.digest, int(row.size)) for row in conn.execute(unreferenced))
            else:
                for row in conn.execute(queued):
                    if row.named:
                        reviewed[row.digest] = int(row.hits)
                    elif _aware(row.last_seen_at) < cutoff:
                        found[row.digest] = int(row.size)
            # Blobs named only by manifests that are about to go.
            named_by_dropped: set[str] = set()
            for batch in _batches(dropped_ids):
                named_by_dropped.update(
                    conn.scalars(sa.select(mb.c.digest).where(mb.c.manifest_id.in_(batch)))
                )
            still_named: set[str] = set()
            dropped_set = set(dropped_ids)
            for digests in _batches(sorted(named_by_dropped)):
                for digest, manifest_id in conn.execute(
                    sa.select(mb.c.digest, mb.c.manifest_id).where(mb.c.digest.in_(digests))
                ):
                    if manifest_id not in dropped_set:
                        still_named.add(digest)
            for digests in _batches(sorted(named_by_dropped - still_named)):
                rows = conn.execute(
                    sa.select(b.c.digest, b.c.size).where(b.c.digest.in_(digests), b.c.last_seen_at < cutoff)
                )
                found.update((row.digest, int(row.size)) for row in rows)
            return sorted(found.items()), reviewed

        return await self._db.read(tx)

    async def gc_forget_reviewed(self, manifests: dict[int, int], blobs: dict[str, int]) -> None:
        """Take reviewed entries off the queues, each only if nothing queued it again since."""
        qm, qb = s.gc_manifest_review, s.gc_blob_review
        forget_manifest = qm.delete().where(
            qm.c.manifest_id == sa.bindparam("key"), qm.c.hits == sa.bindparam("seen")
        )
        forget_blob = qb.delete().where(qb.c.digest == sa.bindparam("key"), qb.c.hits == sa.bindparam("seen"))

        def tx(conn: sa.Connection) -> None:
            for statement, entries in ((forget_manifest, manifests), (forget_blob, blobs)):
                if entries:
                    conn.execute(
                        statement, [{"key": key, "seen": hits} for key, hits in sorted(entries.items())]
                    )

        await self._db.write(tx)

    async def gc_delete_blobs(self, digests: Collection[str], cutoff: datetime) -> list[tuple[str, int]]:
        b, mb, rb = s.blobs, s.manifest_blobs, s.repository_blobs
        wanted = sorted(set(digests))
        batch: Any = sa.bindparam("batch", expanding=True)
        lock = sa.select(b.c.digest).where(b.c.digest.in_(batch)).with_for_update()
        check = sa.select(b.c.digest, b.c.size).where(
            b.c.digest.in_(batch),
            b.c.last_seen_at < cutoff,
            ~sa.select(mb.c.digest).where(mb.c.digest == b.c.digest).exists(),
        )
        # One row a statement, run as executemany: cheaper than building an IN list of
        # hundreds of values, which SQLAlchemy coerces one by one (measured: 0.05 s of 0.2 s).
        unlink = rb.delete().where(rb.c.digest == sa.bindparam("key"))
        forget = b.delete().where(b.c.digest == sa.bindparam("key"))
        note = self._insert(s.gc_pending).on_conflict_do_nothing()

        def tx(conn: sa.Connection) -> list[tuple[str, int]]:
            gone: list[tuple[str, int]] = []
            for digests in _batches(wanted):
                if self.dialect != "sqlite":  # SQLite's writer already holds the database
                    # Lock the rows, then check in a statement of its own, which sees every
                    # reference committed while it waited (PostgreSQL's read committed).
                    conn.execute(lock, {"batch": digests}).all()
                rows = conn.execute(check, {"batch": digests}).all()
                if rows:
                    keys = [{"key": row.digest} for row in rows]
                    conn.execute(unlink, keys)
                    conn.execute(forget, keys)
                    conn.execute(note, [{"digest": row.digest, "at": now, "size": row.size} for row in rows])
                gone.extend((row.digest, int(row.size)) for row in rows)
            return gone

        now = _now()
        return await self._db.write(tx)

    async def gc_pending(self) -> list[tuple[str, int]]:
        p = s.gc_pending

        def tx(conn: sa.Connection) -> list[tuple[str, int]]:
            rows = conn.execute(sa.select(p.c.digest, p.c.size).order_by(p.c.digest))
            return [(row.digest, int(row.size or 0)) for row in rows]

        return await self._db.read(tx)

    async def gc_forget_pending(self, digests: Collection[str]) -> None:
        wanted = sorted(set(digests))

        def tx(conn: sa.Connection) -> None:
            for batch in _batches(wanted):
                conn.execute(s.gc_pending.delete().where(s.gc_pending.c.digest.in_(batch)))

        await self._db.write(tx)

    def _clock(self, later: float = 0.0) -> sa.ColumnElement[datetime]:
        """Now (or ``later`` seconds on), as the database sees it: on PostgreSQL its own
        clock, so replicas whose clocks disagree agree on when a lease ends; SQLite is one
        machine's."""
        if self.dialect == "postgresql":
            return sa.func.clock_timestamp(type_=s.Timestamp) + timedelta(seconds=later)
        return sa.literal(_now() + timedelta(seconds=later), s.Timestamp)

    async def lease_deletes(self, digests: Collection[str], seconds: float) -> str:
        wanted = sorted(set(digests))
        holder = uuid.uuid4().hex
        d = s.blob_deletes

        def tx(conn: sa.Connection) -> None:
            until = conn.scalar(sa.select(self._clock(seconds)))
            rows = [{"digest": digest, "holder": holder, "until": until} for digest in wanted]
            conn.execute(d.insert(), rows)

        if wanted:
            # Apart from the section's connection: committed whatever becomes of that one.
            await self._db.write(tx, apart=True)
        return holder

    async def renew_deletes(self, holder: str, seconds: float) -> None:
        d = s.blob_deletes

        def tx(conn: sa.Connection) -> None:
            until = self._clock(seconds)
            conn.execute(d.update().where(d.c.holder == holder, d.c.until < until).values(until=until))

        await self._db.write(tx, apart=True)

    async def end_deletes(self, holder: str) -> None:
        d = s.blob_deletes

        def tx(conn: sa.Connection) -> None:
            conn.execute(d.delete().where(d.c.holder == holder))
            conn.execute(d.delete().where(d.c.until < self._clock()))

        await self._db.write(tx, apart=True)  # ends even when the section's connection went

    async def delete_lease_left(self, digest: str | None = None) -> float | None:
        d = s.blob_deletes
        query = sa.select(sa.func.max(d.c.until), self._clock())
        if digest is not None:
            query = query.where(d.c.digest == digest)

        def tx(conn: sa.Connection) -> tuple[datetime | None, datetime]:
            until, now = conn.execute(query).one()
            return until, now

        until, now = await self._db.read(tx)
        if until is None:
            return None
        left = (_aware(until) - _aware(now)).total_seconds()
        return left if left > 0 else None

    async def gc_blob_rows(self, digests: Collection[str]) -> set[str]:
        wanted = set(digests)

        def tx(conn: sa.Connection) -> set[str]:
            if len(wanted) > IN_BATCH * 4:
                # Most of the table: one pass over it beats many lookups.
                return wanted.intersection(conn.scalars(sa.select(s.blobs.c.digest)))
            known: set[str] = set()
            for batch in _batches(sorted(wanted)):
                known.update(conn.scalars(sa.select(s.blobs.c.digest).where(s.blobs.c.digest.in_(batch))))
            return known

        return await self._db.read(tx)

    async def record(self, event: Event) -> None:
        def tx(conn: sa.Connection) -> None:
            self._record(conn, event)

        await self._db.write(tx)

    async def count_blobs(self) -> int:
        def tx(conn: sa.Connection) -> int:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(s.blobs)) or 0)

        return await self._db.read(tx)

    async def save_gc_run(self, run: GCRun) -> GCRun:
        values = {k: v for k, v in run.__dict__.items() if k != "id"}

        def tx(conn: sa.Connection) -> int:
            if run.id is None:
                return int(conn.scalar(s.gc_runs.insert().values(**values).returning(s.gc_runs.c.id)))
            conn.execute(s.gc_runs.update().where(s.gc_runs.c.id == run.id).values(**values))
            return run.id

        run.id = await self._db.write(tx)
        return run

    async def gc_close_interrupted(self, reason: str) -> int:
        g = s.gc_runs
        close = g.update().where(g.c.status == "running").values(status="failed", reason=reason)

        def tx(conn: sa.Connection) -> int:
            return int(conn.execute(close.values(ended_at=_now())).rowcount or 0)

        return await self._db.write(tx)

    async def gc_runs(self, limit: int = 20) -> list[GCRun]:
        query = sa.select(s.gc_runs).order_by(s.gc_runs.c.id.desc()).limit(limit)

        def tx(conn: sa.Connection) -> list[GCRun]:
            return [_gc_run(row) for row in conn.execute(query)]

        return await self._db.read(tx)

    async def gc_last_savings(self) -> GCRun | None:
        g = s.gc_runs
        query = (
            sa.select(g)
            .where(g.c.dry_run.is_(sa.false()), g.c.status.in_(("done", "stopped")))
            .order_by(g.c.id.desc())
            .limit(1)
        )

        def tx(conn: sa.Connection) -> GCRun | None:
            row = conn.execute(query).first()
            return None if row is None else _gc_run(row)

        return await self._db.read(tx)

    async def gc_blobs_seen_until(self, digests: Collection[str]) -> datetime | None:
        b = s.blobs
        wanted = sorted(set(digests))

        def tx(conn: sa.Connection) -> datetime | None:
            latest: datetime | None = None
            for batch in _batches(wanted):
                seen = conn.scalar(sa.select(sa.func.max(b.c.last_seen_at)).where(b.c.digest.in_(batch)))
                if seen is not None and (latest is None or _aware(seen) > latest):
                    latest = _aware(seen)
            return latest

        return await self._db.read(tx)

    async def events(
        self,
        limit: int = 100,
        start: int = 0,
        repository: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        e = s.events
        query = sa.select(e).order_by(e.c.id.desc()).offset(start).limit(limit)
        if repository is not None:
            query = query.where(e.c.repository == repository)
        if actor is not None:
            query = query.where(e.c.actor == actor)
        if action is not None:
            query = query.where(e.c.action == action)
        if since is not None:
            query = query.where(e.c.at >= since)
        if until is not None:
            query = query.where(e.c.at < until)

        def tx(conn: sa.Connection) -> list[dict[str, Any]]:
            rows = [dict(row._mapping) for row in conn.execute(query)]
            for row in rows:
                row["at"] = _aware(row["at"])
            return rows

        return await self._db.read(tx)

    async def gc_totals(self) -> list[GCTotals]:
        r = s.gc_runs
        total = [sa.func.coalesce(sa.func.sum(c), 0) for c in (r.c.blobs_deleted, r.c.manifests_deleted)]
        freed = sa.func.coalesce(sa.func.sum(r.c.bytes_freed), 0)
        query = sa.select(r.c.status, r.c.dry_run, sa.func.count(), *total, freed, sa.func.max(r.c.ended_at))

        def tx(conn: sa.Connection) -> list[GCTotals]:
            return [
                GCTotals(
                    status, bool(dry), int(n), int(b), int(m), int(f), None if end is None else _aware(end)
                )
                for status, dry, n, b, m, f, end in conn.execute(query.group_by(r.c.status, r.c.dry_run))
            ]

        return await self._db.read(tx)

    # -- checking (wharf fsck) --------------------------------------------------------------

    async def fsck_snapshot(self) -> RegistrySnapshot:
        b, m, r, t, mb, c = (
            s.blobs,
            s.manifests,
            s.repositories,
            s.tags,
            s.manifest_blobs,
            s.manifest_children,
        )
        held = sa.select(m.c.digest).where(m.c.repository_id == t.c.repository_id, m.c.digest == t.c.digest)

        def tx(conn: sa.Connection) -> RegistrySnapshot:
            if self.dialect == "postgresql":
                # One snapshot for every statement below (read committed takes one each), so
                # a push or a collection between two of them cannot look like a broken image.
                # SQLite's read transaction is one snapshot already.
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            blobs = {digest: int(size) for digest, size in conn.execute(sa.select(b.c.digest, b.c.size))}
            tags: dict[tuple[int, str], list[str]] = {}
            for repo_id, name, digest in conn.execute(sa.select(t.c.repository_id, t.c.name, t.c.digest)):
                tags.setdefault((repo_id, digest), []).append(name)
            named: dict[int, list[str]] = {}
            for manifest_id, digest in conn.execute(sa.select(mb.c.manifest_id, mb.c.digest)):
                named.setdefault(manifest_id, []).append(digest)
            listed: dict[int, list[str]] = {}
            for parent_id, digest in conn.execute(sa.select(c.c.parent_id, c.c.child_digest)):
                listed.setdefault(parent_id, []).append(digest)
            manifests = [
                CheckedManifest(
                    name,
                    digest,
                    tuple(sorted(tags.get((repo_id, digest), ()))),
                    tuple(sorted(named.get(manifest_id, ()))),
                    tuple(sorted(listed.get(manifest_id, ()))),
                )
                for manifest_id, repo_id, name, digest in conn.execute(
                    sa.select(m.c.id, m.c.repository_id, r.c.name, m.c.digest).join(r)
                )
            ]
            dangling = [
                (row.repository, row.name, row.digest)
                for row in conn.execute(
                    sa.select(r.c.name.label("repository"), t.c.name, t.c.digest)
                    .join(r)
                    .where(~held.exists())
                )
            ]
            return RegistrySnapshot(blobs, manifests, sorted(dangling))

        return await self._db.read(tx)

    async def fsck_blobs(self, digests: Collection[str]) -> dict[str, int]:
        wanted = sorted(set(digests))

        def tx(conn: sa.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for batch in _batches(wanted):
                query = sa.select(s.blobs.c.digest, s.blobs.c.size).where(s.blobs.c.digest.in_(batch))
                found.update((digest, int(size)) for digest, size in conn.execute(query))
            return found

        return await self._db.read(tx)

    async def fsck_links(self, digests: Collection[str]) -> dict[str, tuple[str, ...]]:
        rb, r = s.repository_blobs, s.repositories
        wanted = sorted(set(digests))

        def tx(conn: sa.Connection) -> dict[str, tuple[str, ...]]:
            found: dict[str, list[str]] = {}
            for batch in _batches(wanted):
                query = sa.select(rb.c.digest, r.c.name).join(r).where(rb.c.digest.in_(batch))
                for digest, name in conn.execute(query):
                    found.setdefault(digest, []).append(name)
            return {digest: tuple(sorted(names)) for digest, names in found.items()}

        return await self._db.read(tx)
