"""Repositories, their manifests and tags, on SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from .. import schema as s
from ..clock import aware
from ..clock import now as _now
from ..events import Event
from ..manifests import (
    CheckedManifest,
    ImportedBlob,
    ManifestInfo,
    MissingReference,
    NewManifest,
    Referrer,
    RegistrySnapshot,
    StoredManifest,
    TagInfo,
)
from .base import ROW_RACE_ATTEMPTS, SQL, batches, readable_in
from .events import record
from .reads import MANIFEST_BY_DIGEST, MANIFEST_BY_TAG


class SQLManifestRows:
    def __init__(self, sql: SQL) -> None:
        self._sql = sql
        self._db = sql.db

    def _tag_history(
        self, conn: sa.Connection, repo_id: int, name: str, old: str | None, new: str | None, actor: str
    ) -> None:
        conn.execute(
            s.tag_history.insert().values(
                repository_id=repo_id, name=name, old_digest=old, new_digest=new, actor=actor, at=_now()
            )
        )

    async def put(self, repository: str, manifest: NewManifest, tag: str | None, event: Event) -> None:
        def tx(conn: sa.Connection) -> None:
            repo_id = self._sql.repository_id(conn, repository, create=True)
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
            record(conn, event)

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
        b = s.blobs
        for batch in batches(wanted):
            readable = sa.select(b.c.digest).where(b.c.digest.in_(batch), readable_in(repo_id, b.c.digest))
            found.update(conn.scalars(readable))
        missing = set(wanted) - found
        if missing:
            raise MissingReference("blob", next(d for d in manifest.blobs if d in missing))
        children = sorted(set(manifest.children))
        present: set[str] = set()
        for batch in batches(children):
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
            self._sql.insert(m)
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
                self._sql.insert(t)
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
                record(conn, moved)
            return
        raise RuntimeError(f"tag {tag} kept changing under this transaction")

    async def get(self, repository: str, reference: str) -> StoredManifest | None:
        if ":" in reference:
            row = await self._sql.reader.first(MANIFEST_BY_DIGEST, repository=repository, digest=reference)
        else:
            row = await self._sql.reader.first(MANIFEST_BY_TAG, repository=repository, tag=reference)
        return None if row is None else StoredManifest(row[0], row[1], bytes(row[2]))

    async def delete(self, repository: str, digest: str, event: Event) -> list[str] | None:
        def tx(conn: sa.Connection) -> list[str] | None:
            repo_id = self._sql.repository_id(conn, repository)
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
            record(conn, Event(**{**event.__dict__, "detail": {"tags": removed}}))
            return removed

        return await self._db.write(tx)

    async def delete_tag(self, repository: str, tag: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            repo_id = self._sql.repository_id(conn, repository)
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
            record(conn, Event(**{**event.__dict__, "digest": digest}))
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
            repo_id = self._sql.repository_id(conn, repository, create=True)
            assert repo_id is not None
            added = {"blobs": 0, "manifests": 0, "tags": 0}
            now = _now()
            for batch in batches(list(blobs), 500):
                result = conn.execute(
                    self._sql.insert(s.blobs)
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
                conn.execute(self._sql.insert(s.repository_blobs).values(links).on_conflict_do_nothing())
            for manifest in manifests:
                created = self._insert_manifest(conn, repo_id, manifest, now, seen=None)
                if created is None:
                    continue
                added["manifests"] += 1
                self._record_references(conn, created, manifest)
            for tag, digest in sorted(tags.items()):
                created_tag = conn.scalar(
                    self._sql.insert(s.tags)
                    .values(repository_id=repo_id, name=tag, digest=digest, updated_at=now)
                    .on_conflict_do_nothing(index_elements=["repository_id", "name"])
                    .returning(s.tags.c.name)
                )
                if created_tag is not None:
                    added["tags"] += 1
                    self._tag_history(conn, repo_id, tag, None, digest, event.actor)
            if any(added.values()):
                record(conn, Event(**{**event.__dict__, "detail": {**(event.detail or {}), **added}}))
            return added

        return await self._db.write(tx)

    async def delete_repository(self, repository: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            repo_id = self._sql.repository_id(conn, repository)
            if repo_id is None:
                return False
            r, m, t = s.repositories, s.manifests, s.tags
            counts = {
                "manifests": conn.scalar(sa.select(sa.func.count()).where(m.c.repository_id == repo_id)),
                "tags": conn.scalar(sa.select(sa.func.count()).where(t.c.repository_id == repo_id)),
            }
            # Everything of the repository goes with its row (foreign keys cascade).
            conn.execute(r.delete().where(r.c.id == repo_id))
            record(conn, Event(**{**event.__dict__, "detail": counts}))
            return True

        return await self._db.write(tx)

    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str] | None:
        def tx(conn: sa.Connection) -> list[str] | None:
            repo_id = self._sql.repository_id(conn, repository)
            if repo_id is None:
                return None
            name = self._sql.ordered(s.tags.c.name)
            query = sa.select(s.tags.c.name).where(s.tags.c.repository_id == repo_id).order_by(name)
            if last:
                query = query.where(name > last)
            if limit is not None:
                query = query.limit(limit)
            return list((conn.scalars(query)).all())

        return await self._db.read(tx)

    async def tag_details(self, repository: str, start: int, limit: int) -> list[TagInfo] | None:
        t, m = s.tags, s.manifests

        def tx(conn: sa.Connection) -> list[TagInfo] | None:
            repo_id = self._sql.repository_id(conn, repository)
            if repo_id is None:
                return None
            query = (
                sa.select(t.c.name, t.c.digest, m.c.media_type, m.c.size, t.c.updated_at)
                .join(m, sa.and_(m.c.repository_id == t.c.repository_id, m.c.digest == t.c.digest))
                .where(t.c.repository_id == repo_id)
                .order_by(self._sql.ordered(t.c.name))
                .offset(start)
                .limit(limit)
            )
            return [
                TagInfo(row.name, row.digest, row.media_type, row.size, aware(row.updated_at))
                for row in conn.execute(query)
            ]

        return await self._db.read(tx)

    async def manifest_details(self, repository: str, start: int, limit: int) -> list[ManifestInfo] | None:
        t, m = s.tags, s.manifests

        def tx(conn: sa.Connection) -> list[ManifestInfo] | None:
            repo_id = self._sql.repository_id(conn, repository)
            if repo_id is None:
                return None
            query = (
                sa.select(m.c.digest, m.c.media_type, m.c.size, m.c.created_at)
                .where(m.c.repository_id == repo_id)
                .order_by(m.c.created_at, m.c.id)
                .offset(start)
                .limit(limit)
            )
            rows = conn.execute(query).all()
            tags: dict[str, list[str]] = {row.digest: [] for row in rows}
            if tags:
                named = (
                    sa.select(t.c.digest, t.c.name)
                    .where(t.c.repository_id == repo_id, t.c.digest.in_(list(tags)))
                    .order_by(self._sql.ordered(t.c.name))
                )
                for digest, name in conn.execute(named):
                    tags[digest].append(name)
            return [
                ManifestInfo(
                    row.digest, row.media_type, row.size, aware(row.created_at), tuple(tags[row.digest])
                )
                for row in rows
            ]

        return await self._db.read(tx)

    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        r, m = s.repositories, s.manifests
        name = self._sql.ordered(r.c.name)
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

    async def snapshot(self) -> RegistrySnapshot:
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
            if self._sql.dialect == "postgresql":
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
