"""Garbage collection settings: DTR's schedule and lastSavings endpoints, and the settings
document (schedule, duration, mode) with "save and start", and the history of runs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..meta.gc import GCRun
from ..services import gc_defaults
from ..services.gc_defaults import Duration, Mode
from ..services.gc_report import kept_by_grace, would_free
from ..services.job_parameters import MAX_MINUTES
from ..services.registry import Registry
from ..services.schedules import GCSettings
from .deps import AsCaller, Services
from .jobs import JobOut, iso, job_out

router = APIRouter(prefix="/admin/settings/registry/garbageCollection", tags=["garbage collection"])


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: str = Field(
        description='cron in UTC: 5 fields, or 6 with seconds first ("0 0 3 * * SAT"); "" removes it'
    )


class SettingsDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: str = ""
    duration: Duration = gc_defaults.DURATION
    minutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES, allow_inf_nan=False)
    mode: Mode = gc_defaults.MODE
    deleteUntagged: bool = gc_defaults.DELETE_UNTAGGED


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


def _out(registry: Registry, settings: GCSettings, **extra: Any) -> SettingsOut:
    upcoming = iso(registry.schedules.next_gc_run(settings))
    return SettingsOut(**asdict(settings), nextRun=upcoming, **extra)


@router.post("/schedule", response_model=SettingsOut, summary="Set the cron schedule (DTR)")
async def set_schedule(registry: Services, caller: AsCaller, body: ScheduleIn) -> SettingsOut:
    return _out(registry, await registry.schedules.set_gc_schedule(caller, body.schedule))


@router.get("", response_model=SettingsOut, summary="The GC settings")
async def get_settings(registry: Services, caller: AsCaller) -> SettingsOut:
    return _out(registry, await registry.schedules.gc_settings(caller))


@router.put("", response_model=SettingsOut, summary="Save the GC settings; ?start=true also starts a run now")
async def put_settings(
    registry: Services, caller: AsCaller, body: SettingsDoc, start: bool = False
) -> SettingsOut:
    saved = await registry.schedules.save_gc_settings(caller, GCSettings(**body.model_dump()))
    started = None
    if start:
        started = job_out(await registry.schedules.start_gc(caller, saved))
    return _out(registry, saved, started=started)


@router.get(
    "/lastSavings",
    response_model=RunOut,
    summary="What the last real (not dry) collection that completed freed (DTR)",
)
async def last_savings(registry: Services, caller: AsCaller) -> RunOut:
    return _run_out(await registry.gc_history.last_savings(caller))


@router.get("/history", response_model=RunsOut, summary="Garbage collection runs, newest first")
async def history(registry: Services, caller: AsCaller, limit: int = 20) -> RunsOut:
    return RunsOut(runs=[_run_out(run) for run in await registry.gc_history.runs(caller, limit)])
