"""Jobs, schedules' firings and settings: the protocol, whatever the backend."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Job:
    id: str
    action: str
    status: str  # waiting, running, done, errors, stopped
    worker: str | None
    attempts: int
    max_attempts: int
    parameters: dict[str, Any] | None
    created_at: datetime
    scheduled_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    heartbeat_at: datetime | None
    stop_requested: bool
    result: dict[str, Any] | None
    error: str | None
    created_by: str | None = None  # who asked for it; None for jobs older than the column


class JobStore(Protocol):
    async def create(
        self,
        action: str,
        parameters: dict[str, Any] | None = None,
        max_attempts: int = 3,
        created_by: str | None = None,
    ) -> Job: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def find(
        self, action: str | None, worker: str | None, running: bool | None, start: int, limit: int
    ) -> list[Job]:
        """Newest first."""

    async def claim(self, worker: str, actions: Collection[str], stale_before: datetime) -> Job | None:
        """Hand back (or fail, out of attempts) running jobs whose worker stopped
        heart-beating before ``stale_before``, then take the oldest waiting job that is due."""

    async def heartbeat(self, job_id: str, worker: str) -> bool | None:
        """Still ours: whether a stop was asked. None: the job was taken from this worker."""

    async def finish(
        self, job_id: str, worker: str, status: str, result: dict[str, Any] | None, error: str | None
    ) -> None: ...
    async def retry(self, job_id: str, worker: str, error: str, at: datetime) -> bool:
        """Back to waiting until ``at`` if attempts are left (True); else ends in errors."""

    async def release(self, job_id: str, worker: str) -> str | None:
        """Hand a running job back (its worker shuts down): waiting again, the attempt not
        counted; stopped if a stop was asked. None when ``worker`` no longer owned it."""

    async def request_stop(self, job_id: str) -> Job | None: ...
    async def log(self, job_id: str, line: str) -> None: ...
    async def logs(self, job_id: str, start: int, limit: int) -> list[tuple[datetime, str]]: ...
    async def fire_schedule(
        self, name: str, due: datetime, action: str, parameters: dict[str, Any]
    ) -> Job | None:
        """The job for this firing of the schedule, created by the first replica to ask; None
        for the others."""

    async def get_setting(self, key: str) -> dict[str, Any] | None: ...
    async def put_setting(self, key: str, value: dict[str, Any]) -> None: ...
