"""Garbage collection settings: DTR's schedule and lastSavings endpoints, and the settings
document (schedule, duration, mode) with "save and start", and the history of runs."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import INVALID_SCHEDULE, NO_GC_RUN, RegistryError
from ..meta.gc import GCRun
from ..services.gc_report import kept_by_grace, would_free
from ..services.registry import Registry
from ..services.schedules import GCSettings, InvalidSchedule, ScheduleService, next_fire
from .jobs import JobOut, iso, job_out
from .responses import MAX_MINUTES

router = APIRouter(prefix="/admin/settings/registry/garbageCollection", tags=["garbage collection"])


def _schedules(request: Request) -> ScheduleService:
    registry: Registry = request.app.state.registry
    return ScheduleService(registry.meta.jobs, request.app.state.settings.gc.grace_period)


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: str = Field(
        description='cron in UTC: 5 fields, or 6 with seconds first ("0 0 3 * * SAT"); "" removes it'
    )


class SettingsDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: str = ""
    duration: Literal["untilDone", "minutes", "never"] = "untilDone"
    minutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES, allow_inf_nan=False)
    mode: Literal["readonly", "online"] = "online"
    deleteUntagged: bool = False


class SettingsOut(SettingsDoc):
    nextRun: str | None = Field(default=None, description="when the schedule next starts a collection")
    started: JobOut | None = Field(default=None, description="the job started by save-and-start")


class WouldFreeOut(BaseModel):
    blobs: int
    manifests: int
    bytes: int


class KeptByGraceOut(BaseModel):
    blobs: int
    bytes: int
    collectableAfter: str | None = Field(description="when the last of them leaves the grace period (UTC)")


class RunOut(BaseModel):
    id: int | None
    status: str
    reason: str | None
    dryRun: bool
    deleteUntagged: bool
    mode: str
    startedAt: str
    endedAt: str | None
    blobsMarked: int
    blobsEligible: int
    manifestsEligible: int
    blobsDeleted: int
    manifestsDeleted: int
    bytesFreed: int
    graceSeconds: float
    bytesEligible: int
    wouldFree: WouldFreeOut | None = Field(description="a dry run's plan: what the same run would delete")
    keptByGrace: KeptByGraceOut = Field(
        description="blobs kept only because they were pushed or seen within the grace period"
    )


class RunsOut(BaseModel):
    runs: list[RunOut]


def _run_out(run: GCRun) -> RunOut:
    freeing = would_free(run)
    return RunOut(
        id=run.id,
        status=run.status,
        reason=run.reason,
        dryRun=run.dry_run,
        deleteUntagged=run.delete_untagged,
        mode=run.mode,
        startedAt=iso(run.started_at) or "",
        endedAt=iso(run.ended_at),
        blobsMarked=run.blobs_marked,
        blobsEligible=run.blobs_eligible,
        manifestsEligible=run.manifests_eligible,
        blobsDeleted=run.blobs_deleted,
        manifestsDeleted=run.manifests_deleted,
        bytesFreed=run.bytes_freed,
        graceSeconds=run.grace_seconds,
        bytesEligible=run.bytes_eligible,
        wouldFree=None if freeing is None else WouldFreeOut(**freeing),
        keptByGrace=KeptByGraceOut(**kept_by_grace(run)),
    )


def _out(settings: GCSettings, **extra: Any) -> SettingsOut:
    upcoming = None
    if settings.schedule and settings.duration != "never":
        with contextlib.suppress(ValueError):  # a schedule saved before dates were checked
            upcoming = iso(next_fire(settings.schedule, datetime.now(UTC)))
    return SettingsOut(**asdict(settings), nextRun=upcoming, **extra)


async def _save(request: Request, settings: GCSettings) -> GCSettings:
    try:
        return await _schedules(request).save_gc_settings(settings)
    except InvalidSchedule as error:
        raise RegistryError(INVALID_SCHEDULE, {"schedule": settings.schedule}, str(error)) from None


@router.post("/schedule", response_model=SettingsOut, summary="Set the cron schedule (DTR)")
async def set_schedule(request: Request, body: ScheduleIn) -> SettingsOut:
    settings = await _schedules(request).gc_settings()
    settings.schedule = body.schedule
    return _out(await _save(request, settings))


@router.get("", response_model=SettingsOut, summary="The GC settings")
async def get_settings(request: Request) -> SettingsOut:
    return _out(await _schedules(request).gc_settings())


@router.put("", response_model=SettingsOut, summary="Save the GC settings; ?start=true also starts a run now")
async def put_settings(request: Request, body: SettingsDoc, start: bool = False) -> SettingsOut:
    saved = await _save(request, GCSettings(**body.model_dump()))
    started = None
    if start:
        started = job_out(await _schedules(request).start_gc(saved))
    return _out(saved, started=started)


@router.get(
    "/lastSavings",
    response_model=RunOut,
    summary="What the last real (not dry) collection that completed freed (DTR)",
)
async def last_savings(request: Request) -> RunOut:
    registry: Registry = request.app.state.registry
    run = await registry.meta.gc.last_savings()
    if run is not None:
        return _run_out(run)
    raise RegistryError(NO_GC_RUN, {}, "no garbage collection has completed yet")


@router.get("/history", response_model=RunsOut, summary="Garbage collection runs, newest first")
async def history(request: Request, limit: int = 20) -> RunsOut:
    registry: Registry = request.app.state.registry
    return RunsOut(runs=[_run_out(run) for run in await registry.meta.gc.runs(limit=max(1, min(limit, 500)))])
