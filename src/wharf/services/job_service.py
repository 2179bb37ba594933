"""Jobs as a caller sees them: start one (its parameters checked and completed), list and
follow them, stop one. The worker that runs them is in jobs.py."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..errors import NO_SUCH_JOB, RegistryError
from ..meta.jobs import Job, JobStore
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
    def __init__(self, jobs: JobStore, defaults: JobDefaults) -> None:
        self.jobs = jobs
        self.defaults = defaults

    async def start(self, caller: Caller, action: str, given: Mapping[str, Any] | None) -> Job:
        """A job waiting for a worker (of any replica)."""
        return await self.jobs.create(action, complete_parameters(action, given, self.defaults))

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
        return await self.jobs.find(action or None, worker, running, start, limit)

    async def get(self, caller: Caller, job_id: str) -> Job:
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
        job = await self.jobs.request_stop(job_id)
        if job is None:
            raise no_such_job(job_id)
        return job
