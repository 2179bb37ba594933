"""The metadata store on SQLAlchemy Core: SQLite (default) and, with the same code, PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from . import reads
from . import schema as s
from .engines import AsyncEngineDatabase, Database, ThreadedSQLite
from .store import Event, MissingReference, NewManifest, Referrer, StoredManifest, Upload


def _now() -> datetime:
    return datetime.now(UTC)


# A row another transaction deletes between our two statements: try again this many times.
ROW_RACE_ATTEMPTS = 3


class SQLMetadataStore:
    """MetadataStore over SQLAlchemy Core; transactions are plain functions over a connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = sa.engine.make_url(url)
        self.dialect = parsed.get_backend_name()
        self._db: Database
        self.reader: reads.Reader
        if self.dialect == "sqlite":
            threaded = ThreadedSQLite(str(parsed.set(drivername="sqlite")))
            self._db = threaded
            database = parsed.database
            if database and database != ":memory:":
                self.reader = reads.SQLiteReader(database)
            else:
                self.reader = reads.ThreadReader(threaded.read)
        else:
            engine = AsyncEngineDatabase(url)
            self._db = engine
            self.reader = reads.EngineReader(engine.engine)

    async def close(self) -> None:
        self.reader.close()
        await self._db.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

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

    # -- uploads ----------------------------------------------------------------------------

    async def create_upload(self, upload_id: str, repository: str) -> Upload:
        now = _now()

        def tx(conn: sa.Connection) -> None:
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

    # -- manifests and tags -----------------------------------------------------------------

    async def put_manifest(
        self, repository: str, manifest: NewManifest, tag: str | None, event: Event
    ) -> None:
        def tx(conn: sa.Connection) -> None:
            repo_id = self._repository_id(conn, repository, create=True)
            assert repo_id is not None
            self._check_references(conn, repo_id, manifest)
            # A concurrent push of the same manifest may win the insert: then it records the
            # references, and this one only tags, holding the row (FOR SHARE) so that a
            # concurrent delete either waits for this tag or came first and the insert reruns.
            manifest_id = self._claim_manifest(conn, repo_id, manifest)
            if manifest_id is not None:
                if manifest.blobs:
                    conn.execute(
                        s.manifest_blobs.insert(),
                        [{"manifest_id": manifest_id, "digest": d} for d in dict.fromkeys(manifest.blobs)],
                    )
                if manifest.children:
                    conn.execute(
                        s.manifest_children.insert(),
                        [
                            {"parent_id": manifest_id, "child_digest": d}
                            for d in dict.fromkeys(manifest.children)
                        ],
                    )
            if tag is not None:
                self._set_tag(conn, repo_id, tag, manifest.digest, event.actor)
            self._record(conn, event)

        return await self._db.write(tx)

    def _check_references(self, conn: sa.Connection, repo_id: int, manifest: NewManifest) -> None:
        wanted = set(manifest.blobs)
        if wanted:
            linked = sa.select(s.repository_blobs.c.digest).where(
                s.repository_blobs.c.repository_id == repo_id, s.repository_blobs.c.digest.in_(wanted)
            )
            referenced = (
                sa.select(s.manifest_blobs.c.digest)
                .join(s.manifests)
                .where(s.manifests.c.repository_id == repo_id, s.manifest_blobs.c.digest.in_(wanted))
            )
            rows = conn.execute(sa.union(linked, referenced))
            missing = wanted - {row[0] for row in rows}
            if missing:
                raise MissingReference("blob", next(d for d in manifest.blobs if d in missing))
        children = set(manifest.children)
        if children:
            # Held until this transaction ends: a child cannot be deleted under its new index.
            rows = conn.execute(
                sa.select(s.manifests.c.digest)
                .where(s.manifests.c.repository_id == repo_id, s.manifests.c.digest.in_(children))
                .with_for_update(read=True)
            )
            missing = children - {row.digest for row in rows}
            if missing:
                raise MissingReference("manifest", next(d for d in manifest.children if d in missing))

    def _claim_manifest(self, conn: sa.Connection, repo_id: int, manifest: NewManifest) -> int | None:
        """Insert the manifest row; its id when this transaction created it, None when it
        exists already (then it is locked against deletion until this transaction ends)."""
        m = s.manifests
        for _attempt in range(ROW_RACE_ATTEMPTS):
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
                    created_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
                .returning(m.c.id)
            )
            if created is not None:
                return created
            held = conn.scalar(
                sa.select(m.c.id)
                .where(m.c.repository_id == repo_id, m.c.digest == manifest.digest)
                .with_for_update(read=True)
            )
            if held is not None:
                return None
        raise RuntimeError(f"manifest {manifest.digest} kept changing under this transaction")

    def _set_tag(self, conn: sa.Connection, repo_id: int, tag: str, digest: str, actor: str) -> None:
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
                self._tag_history(conn, repo_id, tag, None, digest, actor)
                return
            old = conn.scalar(sa.select(t.c.digest).where(*where).with_for_update())
            if old is None:
                continue  # deleted between the two statements: insert again
            if old != digest:
                conn.execute(t.update().where(*where).values(digest=digest, updated_at=now))
                self._tag_history(conn, repo_id, tag, old, digest, actor)
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
        name = self._ordered(s.repositories.c.name)
        query = sa.select(s.repositories.c.name).order_by(name)
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

    async def events(self, limit: int = 100) -> list[dict[str, Any]]:
        query = sa.select(s.events).order_by(s.events.c.id.desc()).limit(limit)

        def tx(conn: sa.Connection) -> list[dict[str, Any]]:
            return [dict(row._mapping) for row in conn.execute(query)]

        return await self._db.read(tx)
