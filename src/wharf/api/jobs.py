"""Jobs: start one now (DTR's `POST /admin/jobs`), list and follow them, stop one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import parse_duration
from ..errors import INVALID_JOB, NO_SUCH_JOB, RegistryError
from ..meta.jobs import Job
from ..services.jobs import ACTIONS, FSCK, METADATA_MIGRATION, PURGE_UPLOADS, REGISTRY_GC
from ..services.registry import Registry
from .responses import MAX_MINUTES, MAX_SECONDS, MAX_START, HostPath, is_job_id

router = APIRouter(tags=["jobs"])

# Blobs per critical section at most: far more than any batch is worth, and an int64.
MAX_BATCH = 1_000_000


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


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
    )


class JobsOut(BaseModel):
    jobs: list[JobOut]


class GCParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dryRun: bool = False
    deleteUntagged: bool = False
    graceSeconds: float | None = Field(default=None, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    durationMinutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES, allow_inf_nan=False)
    scanStorage: bool = False
    mode: Literal["online", "readonly"] = "online"
    batchSize: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BATCH,
        description="blobs per critical section (default 500), as --batch-size",
    )


class PurgeParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    age: str | None = Field(default=None, description="uploads idle this long go (24h, 90m, 1h30m)")
    dryRun: bool | None = None

    @field_validator("age")
    @classmethod
    def _is_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class MigrationParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: HostPath | None = Field(
        default=None,
        description="the Distribution data directory: the storage root, which is the default",
    )


class FsckParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repair: bool = False
    grace: str | None = Field(
        default=None, description="with repair: leaks younger than this are kept (default gc.grace)"
    )

    @field_validator("grace")
    @classmethod
    def _is_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


PARAMETERS: dict[str, type[BaseModel]] = {
    REGISTRY_GC: GCParameters,
    PURGE_UPLOADS: PurgeParameters,
    METADATA_MIGRATION: MigrationParameters,
    FSCK: FsckParameters,
}


class NewJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: str = Field(description=f"the action: {', '.join(ACTIONS)}")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="registryGC: dryRun, deleteUntagged, graceSeconds, durationMinutes, scanStorage, "
        "mode (online or readonly), batchSize; purgeUploads: age, dryRun; "
        "metadatastoremigration: root (required); fsck: repair, grace",
    )


class LogLine(BaseModel):
    at: str
    line: str


class LogsOut(BaseModel):
    logs: list[LogLine]


@router.post("/admin/jobs", status_code=202, response_model=JobOut, summary="Start a job now")
async def start_job(request: Request, body: NewJob) -> JobOut:
    if body.job not in ACTIONS:
        raise RegistryError(
            INVALID_JOB, {"job": body.job}, f"unknown job {body.job!r}; known: {', '.join(ACTIONS)}"
        )
    registry = _registry(request)
    try:
        given = PARAMETERS[body.job].model_validate(body.parameters or {})
    except ValidationError as error:
        problems = "; ".join(
            f"parameters.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise RegistryError(
            INVALID_JOB, {"job": body.job}, f"invalid parameters for {body.job}: {problems}"
        ) from None
    parameters = given.model_dump(exclude_none=True)
    settings = request.app.state.settings
    if body.job == REGISTRY_GC and "graceSeconds" not in parameters:
        parameters["graceSeconds"] = settings.gc.grace_period.total_seconds()
    if body.job == FSCK and "grace" not in parameters:
        parameters["grace"] = settings.gc.grace
    if body.job == PURGE_UPLOADS:
        purging = settings.storage.maintenance.uploadpurging
        parameters = {"age": purging.age, "dryRun": purging.dryrun, **parameters}
    job = await registry.meta.jobs.create(body.job, parameters)
    return job_out(job)


@router.get("/jobs", response_model=JobsOut, summary="List jobs, newest first")
async def list_jobs(
    request: Request,
    action: str | None = None,
    worker: str = "any",
    running: Literal["any", "true", "false"] = "any",
    start: int = Query(0, ge=0, le=MAX_START),
    limit: int = Query(10, ge=1, le=1000),
) -> JobsOut:
    jobs = await _registry(request).meta.jobs.find(
        action or None,
        None if worker == "any" else worker,
        None if running == "any" else running == "true",
        start,
        limit,
    )
    return JobsOut(jobs=[job_out(job) for job in jobs])


async def _job(request: Request, job_id: str) -> Job:
    job = await _registry(request).meta.jobs.get(job_id) if is_job_id(job_id) else None
    if job is None:
        raise RegistryError(NO_SUCH_JOB, {"id": job_id}, f"no job with id {job_id}")
    return job


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job")
async def get_job(request: Request, job_id: str) -> JobOut:
    return job_out(await _job(request, job_id))


@router.get("/jobs/{job_id}/logs", response_model=LogsOut, summary="A job's log, oldest line first")
async def job_logs(
    request: Request,
    job_id: str,
    start: int = Query(0, ge=0, le=MAX_START),
    limit: int = Query(1000, ge=1, le=10000),
) -> LogsOut:
    await _job(request, job_id)
    lines = await _registry(request).meta.jobs.logs(job_id, start, limit)
    return LogsOut(logs=[LogLine(at=iso(at) or "", line=line) for at, line in lines])


@router.delete("/jobs/{job_id}", response_model=JobOut, status_code=202, summary="Stop a job")
async def stop_job(request: Request, job_id: str) -> JSONResponse:
    """A waiting job is stopped at once; a running one ends cleanly at its next step (a GC
    records what it freed so far)."""
    await _job(request, job_id)
    job = await _registry(request).meta.jobs.request_stop(job_id)
    assert job is not None
    return JSONResponse(job_out(job).model_dump(), status_code=202)
