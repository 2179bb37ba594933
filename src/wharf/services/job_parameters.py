"""The jobs Wharf runs and what each takes: the actions, their parameters with their limits
and defaults. A job is created with its parameters complete (the configuration's defaults
written in), so a worker runs what was asked whatever its own configuration says.

Light on purpose (no croniter, no prometheus_client): the registry builds the job service
for every entry point, the command line's garbage collection included."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import MAX_DURATION, parse_duration
from ..errors import INVALID_JOB, RegistryError
from . import gc_defaults

REGISTRY_GC = "registryGC"
PURGE_UPLOADS = "purgeUploads"
METADATA_MIGRATION = "metadatastoremigration"  # DTR's name: adopting a Distribution directory
FSCK = "fsck"
ACTIONS = (REGISTRY_GC, PURGE_UPLOADS, METADATA_MIGRATION, FSCK)

# The longest time a number in a request may stand for: as durations in the configuration
# (later than that, dates overflow). Floats are finite too: JSON as Python reads it takes
# Infinity and NaN, which would be saved and then fail every attempt of the job.
MAX_SECONDS = MAX_DURATION.total_seconds()
MAX_MINUTES = MAX_SECONDS / 60


@dataclass(frozen=True)
class JobDefaults:
    """What a job takes from the configuration when its request leaves a parameter out."""

    grace: str  # gc.grace, for registryGC's graceSeconds and fsck's grace
    purge_age: str  # storage.maintenance.uploadpurging.age
    purge_dry_run: bool  # storage.maintenance.uploadpurging.dryrun


def _path_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


# A path on the host: no NUL (no system call takes one), at most PATH_MAX.
HostPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_path_text)]


def _duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


class GCParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dryRun: bool = gc_defaults.DRY_RUN
    deleteUntagged: bool = gc_defaults.DELETE_UNTAGGED
    graceSeconds: float | None = Field(default=None, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    durationMinutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES, allow_inf_nan=False)
    scanStorage: bool = gc_defaults.SCAN_STORAGE
    mode: Literal["online", "readonly"] = gc_defaults.MODE  # a refusal names online first
    batchSize: int | None = Field(
        default=None,
        ge=1,
        le=gc_defaults.MAX_BATCH,
        description=f"blobs per critical section (default {gc_defaults.BATCH}), as --batch-size",
    )

    def complete(self, defaults: JobDefaults) -> dict[str, Any]:
        parameters = self.model_dump(exclude_none=True)
        parameters.setdefault("graceSeconds", parse_duration(defaults.grace).total_seconds())
        return parameters


class PurgeParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    age: str | None = Field(default=None, description="uploads idle this long go (24h, 90m, 1h30m)")
    dryRun: bool | None = None

    @field_validator("age")
    @classmethod
    def _is_duration(cls, value: str | None) -> str | None:
        return _duration(value)

    def complete(self, defaults: JobDefaults) -> dict[str, Any]:
        given = self.model_dump(exclude_none=True)
        return {"age": defaults.purge_age, "dryRun": defaults.purge_dry_run, **given}


class MigrationParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: HostPath | None = Field(
        default=None,
        description="the Distribution data directory: the storage root, which is the default",
    )

    def complete(self, defaults: JobDefaults) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class FsckParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repair: bool = False
    grace: str | None = Field(
        default=None, description="with repair: leaks younger than this are kept (default gc.grace)"
    )

    @field_validator("grace")
    @classmethod
    def _is_duration(cls, value: str | None) -> str | None:
        return _duration(value)

    def complete(self, defaults: JobDefaults) -> dict[str, Any]:
        parameters = self.model_dump(exclude_none=True)
        parameters.setdefault("grace", defaults.grace)
        return parameters


Parameters = GCParameters | PurgeParameters | MigrationParameters | FsckParameters

PARAMETERS: dict[str, type[Parameters]] = {
    REGISTRY_GC: GCParameters,
    PURGE_UPLOADS: PurgeParameters,
    METADATA_MIGRATION: MigrationParameters,
    FSCK: FsckParameters,
}

# For the API's description of a job's body.
PARAMETER_NAMES = (
    "registryGC: dryRun, deleteUntagged, graceSeconds, durationMinutes, scanStorage, "
    "mode (online or readonly), batchSize; purgeUploads: age, dryRun; "
    "metadatastoremigration: root (required); fsck: repair, grace"
)


def complete_parameters(
    action: str, given: Mapping[str, Any] | None, defaults: JobDefaults
) -> dict[str, Any]:
    """The parameters a job of ``action`` is created with: ``given`` checked, and what it
    leaves out taken from the configuration. INVALID_JOB names what does not fit."""
    if action not in ACTIONS:
        raise RegistryError(
            INVALID_JOB, {"job": action}, f"unknown job {action!r}; known: {', '.join(ACTIONS)}"
        )
    try:
        checked = PARAMETERS[action].model_validate(given or {})
    except ValidationError as error:
        problems = "; ".join(
            f"parameters.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise RegistryError(
            INVALID_JOB, {"job": action}, f"invalid parameters for {action}: {problems}"
        ) from None
    return checked.complete(defaults)
