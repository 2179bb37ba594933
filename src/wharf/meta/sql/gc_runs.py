"""Garbage collection's record of runs on SQLAlchemy Core: what each run found and freed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .. import schema as s
from ..clock import aware as _aware
from ..clock import now as _now
from ..gc import GCRun, GCTotals
from .base import SQL


def _gc_run(row: Any) -> GCRun:
    fields = dict(row._mapping)
    for key in ("started_at", "ended_at", "grace_kept_until"):
        if fields[key] is not None:
            fields[key] = _aware(fields[key])
    return GCRun(**fields)


class SQLGCRunRecord:
    """The runs half of ``GCRows``; ``SQLGCRows`` is the whole."""

    def __init__(self, sql: SQL) -> None:
        self._db = sql.db

    async def save_run(self, run: GCRun) -> GCRun:
        values = {k: v for k, v in run.__dict__.items() if k != "id"}

        def tx(conn: sa.Connection) -> int:
            if run.id is None:
                return int(conn.scalar(s.gc_runs.insert().values(**values).returning(s.gc_runs.c.id)))
            conn.execute(s.gc_runs.update().where(s.gc_runs.c.id == run.id).values(**values))
            return run.id

        run.id = await self._db.write(tx)
        return run

    async def close_interrupted(self, reason: str) -> int:
        g = s.gc_runs
        close = g.update().where(g.c.status == "running").values(status="failed", reason=reason)

        def tx(conn: sa.Connection) -> int:
            return int(conn.execute(close.values(ended_at=_now())).rowcount or 0)

        return await self._db.write(tx)

    async def runs(self, limit: int = 20) -> list[GCRun]:
        query = sa.select(s.gc_runs).order_by(s.gc_runs.c.id.desc()).limit(limit)

        def tx(conn: sa.Connection) -> list[GCRun]:
            return [_gc_run(row) for row in conn.execute(query)]

        return await self._db.read(tx)

    async def last_savings(self) -> GCRun | None:
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

    async def totals(self) -> list[GCTotals]:
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
