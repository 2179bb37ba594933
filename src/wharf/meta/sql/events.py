"""The activity log on SQLAlchemy Core."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import schema as s
from ..clock import aware as _aware
from ..clock import now as _now
from ..events import Event
from .base import SQL


def record(conn: sa.Connection, event: Event) -> None:
    """Add the event inside the caller's transaction: it is logged exactly when what it
    tells of is committed."""
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


class SQLEventLog:
    def __init__(self, sql: SQL) -> None:
        self._db = sql.db

    async def record(self, event: Event) -> None:
        def tx(conn: sa.Connection) -> None:
            record(conn, event)

        await self._db.write(tx)

    async def find(
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
