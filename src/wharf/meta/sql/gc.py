"""Garbage collection's plan and sweep on SQLAlchemy Core: the manifests and blobs it weighs,
the review queues, the journal of deleted rows whose bytes may remain, and the leases of
deletions under way. The record of runs is in ``gc_runs``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .. import schema as s
from ..clock import aware as _aware
from ..clock import now as _now
from ..gc import GCManifest
from .base import SQL, batches
from .gc_runs import SQLGCRunRecord


class SQLGCRows(SQLGCRunRecord):
    def __init__(self, sql: SQL) -> None:
        super().__init__(sql)
        self._sql = sql

    def _manifest_rows(self, conn: sa.Connection, where: Any | None) -> list[GCManifest]:
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
            for batch in batches(sorted(row.id for row in rows)):
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

    async def manifests(self) -> list[GCManifest]:
        def tx(conn: sa.Connection) -> list[GCManifest]:
            return self._manifest_rows(conn, None)

        return await self._db.read(tx)

    async def listing(self) -> list[tuple[int, str, str, tuple[str, ...]]]:
        m, r, mb = s.manifests, s.repositories, s.manifest_blobs
        query = (
            sa.select(m.c.id, r.c.name, m.c.digest)
            .join(r)
            .order_by(self._sql.ordered(r.c.name), self._sql.ordered(m.c.digest))
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

    async def manifest_queue(self) -> dict[int, int]:
        q = s.gc_manifest_review

        def tx(conn: sa.Connection) -> dict[int, int]:
            return {row.manifest_id: row.hits for row in conn.execute(sa.select(q.c.manifest_id, q.c.hits))}

        return await self._db.read(tx)

    async def manifests_around(
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
                for batch in batches(values):
                    for manifest in self._manifest_rows(conn, condition(batch)):
                        found[manifest.id] = manifest
            return list(found.values())

        return await self._db.read(tx)

    async def delete_manifests(
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

    async def blob_candidates(
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
            for batch in batches(dropped_ids):
                named_by_dropped.update(
                    conn.scalars(sa.select(mb.c.digest).where(mb.c.manifest_id.in_(batch)))
                )
            still_named: set[str] = set()
            dropped_set = set(dropped_ids)
            for digests in batches(sorted(named_by_dropped)):
                for digest, manifest_id in conn.execute(
                    sa.select(mb.c.digest, mb.c.manifest_id).where(mb.c.digest.in_(digests))
                ):
                    if manifest_id not in dropped_set:
                        still_named.add(digest)
            for digests in batches(sorted(named_by_dropped - still_named)):
                rows = conn.execute(
                    sa.select(b.c.digest, b.c.size).where(b.c.digest.in_(digests), b.c.last_seen_at < cutoff)
                )
                found.update((row.digest, int(row.size)) for row in rows)
            return sorted(found.items()), reviewed

        return await self._db.read(tx)

    async def forget_reviewed(self, manifests: dict[int, int], blobs: dict[str, int]) -> None:
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

    async def delete_blobs(self, digests: Collection[str], cutoff: datetime) -> list[tuple[str, int]]:
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
        note = self._sql.insert(s.gc_pending).on_conflict_do_nothing()

        def tx(conn: sa.Connection) -> list[tuple[str, int]]:
            gone: list[tuple[str, int]] = []
            for digests in batches(wanted):
                if self._sql.dialect != "sqlite":  # SQLite's writer already holds the database
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

    async def pending(self) -> list[tuple[str, int]]:
        p = s.gc_pending

        def tx(conn: sa.Connection) -> list[tuple[str, int]]:
            rows = conn.execute(sa.select(p.c.digest, p.c.size).order_by(p.c.digest))
            return [(row.digest, int(row.size or 0)) for row in rows]

        return await self._db.read(tx)

    async def forget_pending(self, digests: Collection[str]) -> None:
        wanted = sorted(set(digests))

        def tx(conn: sa.Connection) -> None:
            for batch in batches(wanted):
                conn.execute(s.gc_pending.delete().where(s.gc_pending.c.digest.in_(batch)))

        await self._db.write(tx)

    def _clock(self, later: float = 0.0) -> sa.ColumnElement[datetime]:
        """Now (or ``later`` seconds on), as the database sees it: on PostgreSQL its own
        clock, so replicas whose clocks disagree agree on when a lease ends; SQLite is one
        machine's."""
        if self._sql.dialect == "postgresql":
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
