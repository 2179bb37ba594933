"""Jobs: start one now (DTR's `POST /admin/jobs`), list and follow them, stop one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..meta.jobs import Job
from ..services.job_parameters import ACTIONS, PARAMETER_NAMES
from .deps import AsCaller, Services
from .responses import MAX_START

router = APIRouter(tags=["jobs"])


def iso(moment: datetime | None) -> str | None:
    """A timestamp as the API writes it: ISO 8601 in UTC with a Z."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


class JobOut(BaseModel):
    id: str
    action: str
    status: str = Field(description="waiting, running, done, errors or stopped")
    workerID: str | None
    attempts: int
    retriesLeft: int
    parameters: dict[str, Any] | None
    scheduledAt: str | None
    startedAt: str | None
    endedAt: str | None
    lastUpdated: str | None = Field(description="the running worker's last heartbeat")
    stopRequested: bool
    result: dict[str, Any] | None
    error: str | None
    createdBy: str | None = Field(
        description="who started it (a schedule's jobs: none; jobs older than accounts: none)"
    )


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        action=job.action,
        status=job.status,
        workerID=job.worker,
        attempts=job.attempts,
        retriesLeft=max(job.max_attempts - job.attempts, 0),
        parameters=job.parameters,
        scheduledAt=iso(job.scheduled_at),
        startedAt=iso(job.started_at),
        endedAt=iso(job.ended_at),
        lastUpdated=iso(job.heartbeat_at),
        stopRequested=job.stop_requested,
        result=job.result,
        error=job.error,
        createdBy=job.created_by,
    )


class JobsOut(BaseModel):
    jobs: list[JobOut]


class NewJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: str = Field(description=f"the action: {', '.join(ACTIONS)}")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description=PARAMETER_NAMES,
    )


class LogLine(BaseModel):
    at: str
    line: str


class LogsOut(BaseModel):
    logs: list[LogLine]


@router.post("/admin/jobs", status_code=202, response_model=JobOut, summary="Start a job now")
async def start_job(registry: Services, caller: AsCaller, body: NewJob) -> JobOut:
    return job_out(await registry.jobs.start(caller, body.job, body.parameters))


@router.get("/jobs", response_model=JobsOut, summary="List jobs, newest first")
async def list_jobs(
    registry: Services,
    caller: AsCaller,
    action: str | None = None,
    worker: str = "any",
    running: Literal["any", "true", "false"] = "any",
    start: int = Query(0, ge=0, le=MAX_START),
    limit: int = Query(10, ge=1, le=1000),
) -> JobsOut:
    jobs = await registry.jobs.find(
        caller,
        action or None,
        None if worker == "any" else worker,
        None if running == "any" else running == "true",
        start,
        limit,
    )
    return JobsOut(jobs=[job_out(job) for job in jobs])


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job")
async def get_job(registry: Services, caller: AsCaller, job_id: str) -> JobOut:
    return job_out(await registry.jobs.get(caller, job_id))


@router.get("/jobs/{job_id}/logs", response_model=LogsOut, summary="A job's log, oldest line first")
async def job_logs(
    registry: Services,
    caller: AsCaller,
    job_id: str,
    start: int = Query(0, ge=0, le=MAX_START),
    limit: int = Query(1000, ge=1, le=10000),
) -> LogsOut:
    lines = await registry.jobs.logs(caller, job_id, start, limit)
    return LogsOut(logs=[LogLine(at=iso(at) or "", line=line) for at, line in lines])


@router.delete("/jobs/{job_id}", response_model=JobOut, status_code=202, summary="Stop a job")
async def stop_job(registry: Services, caller: AsCaller, job_id: str) -> JSONResponse:
    """A waiting job is stopped at once; a running one ends cleanly at its next step (a GC
    records what it freed so far)."""
    job = await registry.jobs.stop(caller, job_id)
    return JSONResponse(job_out(job).model_dump(), status_code=202)
