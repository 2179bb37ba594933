"""Jobs as a caller sees them: start one (its parameters checked and completed), list and
follow them, stop one. The worker that runs them is in jobs.py."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..errors import NO_SUCH_JOB, RegistryError
from ..meta.events import Event, EventLog
from ..meta.jobs import Job, JobStore
from .access import AccessService
from .caller import Caller
from .job_parameters import JobDefaults, complete_parameters


def is_job_id(value: str) -> bool:
    """Job ids are UUIDs as the store writes them; anything else names no job (and is not
    looked up: PostgreSQL cannot compare text holding a NUL)."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def no_such_job(job_id: str) -> RegistryError:
    return RegistryError(NO_SUCH_JOB, {"id": job_id}, f"no job with id {job_id}")


class JobService:
    """Jobs are a system administrator's: every method refuses anyone else."""

    def __init__(
        self, jobs: JobStore, defaults: JobDefaults, access: AccessService, events: EventLog
    ) -> None:
        self.jobs = jobs
        self.defaults = defaults
        self.access = access
        self.events = events

    async def start(self, caller: Caller, action: str, given: Mapping[str, Any] | None) -> Job:
        """A job waiting for a worker (of any replica), recorded as the caller's."""
        self.access.require_admin(caller, "start jobs")
        parameters = complete_parameters(action, given, self.defaults)
        job = await self.jobs.create(action, parameters, created_by=caller.name)
        await self.events.record(Event(caller.name, "job.start", detail={"job": job.id, "action": action}))
        return job

    async def find(
        self,
        caller: Caller,
        action: str | None,
        worker: str | None,
        running: bool | None,
        start: int,
        limit: int,
    ) -> list[Job]:
        """Newest first; None matches any action, worker, or running state."""
        self.access.require_admin(caller, "see jobs")
        return await self.jobs.find(action or None, worker, running, start, limit)

    async def get(self, caller: Caller, job_id: str) -> Job:
        self.access.require_admin(caller, "see jobs")
        job = await self.jobs.get(job_id) if is_job_id(job_id) else None
        if job is None:
            raise no_such_job(job_id)
        return job

    async def logs(self, caller: Caller, job_id: str, start: int, limit: int) -> list[tuple[datetime, str]]:
        """The job's log, oldest line first."""
        await self.get(caller, job_id)
        return await self.jobs.logs(job_id, start, limit)

    async def stop(self, caller: Caller, job_id: str) -> Job:
        """A waiting job is stopped at once; a running one ends cleanly at its next step."""
        await self.get(caller, job_id)
        self.access.require_admin(caller, "stop jobs")
        job = await self.jobs.request_stop(job_id)
        if job is None:
            raise no_such_job(job_id)
        await self.events.record(Event(caller.name, "job.stop", detail={"job": job.id, "action": job.action}))
        return job
