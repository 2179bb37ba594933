"""Garbage collection's record of runs on SQLAlchemy Core: what each run found and freed."""

from __future__ import annotations

import sqlalchemy as sa

from .. import schema as s
from ..clock import aware as _aware
from ..clock import now as _now
from ..gc import GCRun, GCTotals
from .base import SQL


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
            runs = []
            for row in conn.execute(query):
                fields = dict(row._mapping)
                for key in ("started_at", "ended_at"):
                    if fields[key] is not None:
                        fields[key] = _aware(fields[key])
                runs.append(GCRun(**fields))
            return runs

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
