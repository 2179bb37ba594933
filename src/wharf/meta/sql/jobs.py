"""The job store on SQLAlchemy Core: claims through the database, so each job runs once
whatever the number of workers and replicas."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import schema as s
from ..clock import aware as _aware
from ..clock import now as _now
from ..jobs import Job
from .base import SQL


def _job(row: Any) -> Job:
    fields = dict(row._mapping)
    for key in ("created_at", "scheduled_at", "started_at", "ended_at", "heartbeat_at"):
        if fields[key] is not None:
            fields[key] = _aware(fields[key])
    fields["stop_requested"] = bool(fields["stop_requested"])
    return Job(**fields)


def _new_job(action: str, parameters: dict[str, Any] | None, max_attempts: int) -> dict[str, Any]:
    """A waiting job's row, due now."""
    now = _now()
    return {
        "id": str(uuid.uuid4()),
        "action": action,
        "status": "waiting",
        "worker": None,
        "attempts": 0,
        "max_attempts": max_attempts,
        "parameters": parameters,
        "created_at": now,
        "scheduled_at": now,
        "started_at": None,
        "ended_at": None,
        "heartbeat_at": None,
        "stop_requested": False,
        "result": None,
        "error": None,
    }


class SQLJobStore:
    def __init__(self, sql: SQL) -> None:
        self._db = sql.db
        self._dialect = sql.dialect
        self._insert = sql.insert

    async def create(
        self,
        action: str,
        parameters: dict[str, Any] | None = None,
        max_attempts: int = 3,
        created_by: str | None = None,
    ) -> Job:
        values = {**_new_job(action, parameters, max_attempts), "created_by": created_by}

        def tx(conn: sa.Connection) -> None:
            conn.execute(s.jobs.insert().values(**values))

        await self._db.write(tx)
        return Job(**values)

    async def get(self, job_id: str) -> Job | None:
        def tx(conn: sa.Connection) -> Job | None:
            row = conn.execute(sa.select(s.jobs).where(s.jobs.c.id == job_id)).first()
            return None if row is None else _job(row)

        return await self._db.read(tx)

    async def find(
        self, action: str | None, worker: str | None, running: bool | None, start: int, limit: int
    ) -> list[Job]:
        j = s.jobs
        query = sa.select(j).order_by(j.c.created_at.desc(), j.c.id).offset(start).limit(limit)
        if action:
            query = query.where(j.c.action == action)
        if worker:
            query = query.where(j.c.worker == worker)
        if running is not None:
            query = query.where((j.c.status == "running") if running else (j.c.status != "running"))

        def tx(conn: sa.Connection) -> list[Job]:
            return [_job(row) for row in conn.execute(query)]

        return await self._db.read(tx)

    async def claim(self, worker: str, actions: Collection[str], stale_before: datetime) -> Job | None:
        j = s.jobs
        now = _now()

        def tx(conn: sa.Connection) -> Job | None:
            stale = (j.c.status == "running", j.c.heartbeat_at < stale_before)
            lost = f"worker stopped reporting before {stale_before.isoformat()}"
            conn.execute(
                j.update()
                .where(*stale, j.c.attempts >= j.c.max_attempts)
                .values(status="errors", ended_at=now, error=lost)
            )
            conn.execute(
                j.update().where(*stale).values(status="waiting", worker=None, scheduled_at=now, error=lost)
            )
            due = (
                sa.select(j.c.id)
                .where(j.c.status == "waiting", j.c.scheduled_at <= now, j.c.action.in_(list(actions)))
                .order_by(j.c.scheduled_at, j.c.created_at)
                .limit(1)
            )
            if self._dialect == "postgresql":
                due = due.with_for_update(skip_locked=True)
            job_id = conn.scalar(due)
            if job_id is None:
                return None
            row = conn.execute(
                j.update()
                .where(j.c.id == job_id, j.c.status == "waiting")
                .values(
                    status="running",
                    worker=worker,
                    attempts=j.c.attempts + 1,
                    started_at=now,
                    heartbeat_at=now,
                    ended_at=None,
                )
                .returning(*j.c)
            ).first()
            return None if row is None else _job(row)

        return await self._db.write(tx)

    async def heartbeat(self, job_id: str, worker: str) -> bool | None:
        j = s.jobs

        def tx(conn: sa.Connection) -> bool | None:
            stop = conn.scalar(
                j.update()
                .where(j.c.id == job_id, j.c.worker == worker, j.c.status == "running")
                .values(heartbeat_at=_now())
                .returning(j.c.stop_requested)
            )
            return None if stop is None else bool(stop)

        return await self._db.write(tx)

    async def finish(
        self, job_id: str, worker: str, status: str, result: dict[str, Any] | None, error: str | None
    ) -> None:
        j = s.jobs

        def tx(conn: sa.Connection) -> None:
            conn.execute(
                j.update()
                .where(j.c.id == job_id, j.c.worker == worker, j.c.status == "running")
                .values(status=status, result=result, error=error, ended_at=_now())
            )

        await self._db.write(tx)

    async def retry(self, job_id: str, worker: str, error: str, at: datetime) -> bool:
        j = s.jobs

        def tx(conn: sa.Connection) -> bool:
            again = conn.execute(
                j.update()
                .where(
                    j.c.id == job_id,
                    j.c.worker == worker,
                    j.c.status == "running",
                    j.c.attempts < j.c.max_attempts,
                    ~j.c.stop_requested,
                )
                .values(status="waiting", worker=None, scheduled_at=at, error=error)
            ).rowcount
            if again:
                return True
            conn.execute(
                j.update()
                .where(j.c.id == job_id, j.c.worker == worker, j.c.status == "running")
                .values(status="errors", error=error, ended_at=_now())
            )
            return False

        return await self._db.write(tx)

    async def release(self, job_id: str, worker: str) -> str | None:
        """Hand a running job back, as its worker shuts down: waiting again at once, for any
        worker to claim, and the attempt given back (a shutdown is not the job failing, so
        rolling restarts never use up its attempts). A job whose stop was asked ends
        stopped instead. Only while ``worker`` still owns it: the status it is left in, or
        None when it was no longer this worker's (taken over, or already ended)."""
        j = s.jobs
        mine = (j.c.id == job_id, j.c.worker == worker, j.c.status == "running")

        def tx(conn: sa.Connection) -> str | None:
            now = _now()
            if conn.execute(
                j.update()
                .where(*mine, j.c.stop_requested)
                .values(status="stopped", ended_at=now, error="stopped on request")
            ).rowcount:
                return "stopped"
            if conn.execute(
                j.update()
                .where(*mine)
                .values(status="waiting", worker=None, attempts=j.c.attempts - 1, scheduled_at=now)
            ).rowcount:
                return "waiting"
            return None

        return await self._db.write(tx)

    async def request_stop(self, job_id: str) -> Job | None:
        j = s.jobs

        def tx(conn: sa.Connection) -> Job | None:
            now = _now()
            # Not started yet: stopped at once. Running: its worker sees the request at its
            # next heartbeat and ends the run cleanly.
            conn.execute(
                j.update()
                .where(j.c.id == job_id, j.c.status == "waiting")
                .values(status="stopped", ended_at=now)
            )
            conn.execute(
                j.update().where(j.c.id == job_id, j.c.status == "running").values(stop_requested=True)
            )
            row = conn.execute(sa.select(j).where(j.c.id == job_id)).first()
            return None if row is None else _job(row)

        return await self._db.write(tx)

    async def log(self, job_id: str, line: str) -> None:
        def tx(conn: sa.Connection) -> None:
            conn.execute(s.job_logs.insert().values(job_id=job_id, at=_now(), line=line))

        await self._db.write(tx)

    async def logs(self, job_id: str, start: int, limit: int) -> list[tuple[datetime, str]]:
        query = (
            sa.select(s.job_logs.c.at, s.job_logs.c.line)
            .where(s.job_logs.c.job_id == job_id)
            .order_by(s.job_logs.c.id)
            .offset(start)
            .limit(limit)
        )

        def tx(conn: sa.Connection) -> list[tuple[datetime, str]]:
            return [(_aware(at), line) for at, line in conn.execute(query)]

        return await self._db.read(tx)

    async def fire_schedule(
        self, name: str, due: datetime, action: str, parameters: dict[str, Any]
    ) -> Job | None:
        """Record the firing of ``name``'s slot ``due`` and create its job, in one
        transaction: the first replica to fire the slot creates the job, and a failure
        between the two (a crash, a job that cannot be written) leaves neither, so the slot
        is fired again at the next poll instead of being lost."""
        fired = self._insert(s.schedule_fires).values(name=name, due=due).on_conflict_do_nothing()
        values = _new_job(action, parameters, 3)

        def tx(conn: sa.Connection) -> bool:
            if not conn.execute(fired).rowcount:
                return False
            conn.execute(s.jobs.insert().values(**values))
            return True

        if not await self._db.write(tx):
            return None
        return Job(**values)

    async def get_setting(self, key: str) -> dict[str, Any] | None:
        def tx(conn: sa.Connection) -> dict[str, Any] | None:
            value: dict[str, Any] | None = conn.scalar(
                sa.select(s.settings.c.value).where(s.settings.c.key == key)
            )
            return value

        return await self._db.read(tx)

    async def put_setting(self, key: str, value: dict[str, Any]) -> None:
        upsert = self._insert(s.settings).values(key=key, value=value, updated_at=_now())
        upsert = upsert.on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "updated_at": _now()}
        )

        def tx(conn: sa.Connection) -> None:
            conn.execute(upsert)

        await self._db.write(tx)
