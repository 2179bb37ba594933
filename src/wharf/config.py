"""Wharf's configuration: one YAML file with Distribution's key names, overridable from the environment.

Environment rule: ``WHARF_`` followed by the key's path in upper case, the parts joined
by ``_``. For example ``storage.filesystem.rootdirectory`` is
``WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY`` and ``http.addr`` is ``WHARF_HTTP_ADDR``.
Keys never contain an underscore, so the mapping is unambiguous. Values are parsed as YAML
scalars (``true``, ``4``, ``info``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "WHARF_"
# Environment variables with the prefix that are not configuration keys.
RESERVED_ENV = {"WHARF_CONFIG"}
RESERVED_ENV_PREFIXES = ("WHARF_TEST_", "WHARF_BENCH_")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


MAX_DURATION = timedelta(days=36525)  # later than that, dates overflow


def parse_duration(text: str) -> timedelta:
    """Durations as Distribution writes them: ``24h``, ``90m``, ``1h30m``, ``0s`` (also ``7d``
    and a bare ``0``)."""
    value = text.strip()
    if value == "0":
        return timedelta(0)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"{text!r} is not a duration (examples: 24h, 30m, 1h30m, 45s, 0s)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is too long a duration (at most 100 years)")
    return timedelta(seconds=seconds)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogConfig(Section):
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    formatter: Literal["text", "json"] = "text"


class TimeoutsConfig(Section):
    """Wharf's own (Distribution sets no timeout on its http.Server): how long a client may
    keep a connection without sending what it owes, so idle clients cannot hold them all."""

    # A request's line and headers must all arrive within this (granian allows 1ms..60s).
    header: str = "30s"
    # A request body may go this long without a byte arriving: 408, connection closed.
    idle: str = "60s"

    @field_validator("header", "idle")
    @classmethod
    def _positive_duration(cls, value: str) -> str:
        if parse_duration(value) <= timedelta(0):
            raise ValueError("must be longer than 0")
        return value

    @field_validator("header")
    @classmethod
    def _granian_range(cls, value: str) -> str:
        if parse_duration(value) > timedelta(seconds=60):
            raise ValueError("must be at most 60s")
        return value

    @property
    def header_seconds(self) -> float:
        return parse_duration(self.header).total_seconds()

    @property
    def idle_seconds(self) -> float:
        return parse_duration(self.idle).total_seconds()


class HTTPConfig(Section):
    addr: str = "127.0.0.1:5000"
    workers: int = Field(default=1, ge=1, le=64)
    timeouts: TimeoutsConfig = TimeoutsConfig()
    # Per worker process. Connections beyond maxconnections wait in the listen backlog
    # (granian) or are answered 503 (uvicorn); requests beyond maxrequests are answered 503.
    maxconnections: int = Field(default=8192, ge=1, le=1_000_000)
    maxrequests: int = Field(default=4096, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _requests_fit_connections(self) -> HTTPConfig:
        if self.maxrequests > self.maxconnections:
            raise ValueError("maxrequests must not exceed maxconnections (each request holds a connection)")
        return self

    @field_validator("addr")
    @classmethod
    def _addr_has_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:5000")
        return value

    @property
    def host(self) -> str:
        return self.addr.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.addr.rpartition(":")[2])


class FilesystemConfig(Section):
    rootdirectory: str = "./data"


class DeleteConfig(Section):
    enabled: bool = True


class ReadOnlyConfig(Section):
    enabled: bool = False


class UploadPurgingConfig(Section):
    """Distribution's: uploads no request wrote to for ``age`` are deleted every ``interval``
    (by a purgeUploads job that one worker of all the replicas runs)."""

    enabled: bool = True
    age: str = "168h"
    interval: str = "24h"
    dryrun: bool = False

    @field_validator("age", "interval")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _interval_positive(self) -> UploadPurgingConfig:
        if self.enabled and parse_duration(self.interval) <= timedelta(0):
            raise ValueError("interval must be longer than 0 (or set enabled: false)")
        return self


class MaintenanceConfig(Section):
    readonly: ReadOnlyConfig = ReadOnlyConfig()
    uploadpurging: UploadPurgingConfig = UploadPurgingConfig()


class S3Config(Section):
    """Distribution's s3 driver keys (the ones Wharf acts on), plus ``spooldirectory``."""

    bucket: str
    region: str = "us-east-1"
    regionendpoint: str = ""
    accesskey: str = ""
    secretkey: str = ""
    rootdirectory: str = ""
    forcepathstyle: bool = False
    skipverify: bool = False
    # Wharf's own: where request bodies wait on local disk before they go to the bucket.
    spooldirectory: str = ""


class RedirectConfig(Section):
    disable: bool = False


class StorageConfig(Section):
    filesystem: FilesystemConfig = FilesystemConfig()
    s3: S3Config | None = None
    redirect: RedirectConfig = RedirectConfig()
    delete: DeleteConfig = DeleteConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    fsync: bool = True


class DatabaseConfig(Section):
    # Empty means SQLite in the storage root directory: <rootdirectory>/wharf.db.
    url: str = ""

    @field_validator("url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value


class GCConfig(Section):
    # Blobs and untagged manifests seen (pushed, mounted, found by a HEAD) more recently
    # than this are never collected: pushes in progress stay safe.
    grace: str = "24h"

    @field_validator("grace")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def grace_period(self) -> timedelta:
        return parse_duration(self.grace)


class JobsConfig(Section):
    """Wharf's own: the job worker inside every `wharf serve` process."""

    enabled: bool = True  # false: this process runs no jobs (run `wharf worker` elsewhere)
    poll: str = "1s"  # how often an idle worker looks for work
    heartbeat: str = "2s"  # how often a running job reports (and learns of a stop request)
    stale: str = "30s"  # a running job silent this long is taken over by another worker

    @field_validator("poll", "heartbeat", "stale")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class UploadsConfig(Section):
    """Wharf's own: limits on blob upload sessions."""

    # Sessions one repository may hold open at once (POSTs past it answer 429
    # TOOMANYREQUESTS); abandoned ones go with storage.maintenance.uploadpurging.
    maxopen: int = Field(default=1000, ge=1, le=1_000_000)


class Settings(Section):
    version: str = "0.1"
    log: LogConfig = LogConfig()
    http: HTTPConfig = HTTPConfig()
    storage: StorageConfig = StorageConfig()
    database: DatabaseConfig = DatabaseConfig()
    gc: GCConfig = GCConfig()
    uploads: UploadsConfig = UploadsConfig()
    jobs: JobsConfig = JobsConfig()

    @model_validator(mode="after")
    def _one_storage_driver(self) -> Settings:
        if self.storage.s3 is not None and "filesystem" in self.storage.model_fields_set:
            raise ValueError("storage: configure one driver, filesystem or s3, not both")
        return self

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # Distribution's files say `version: 0.1`, which YAML reads as a number.
        return str(value) if isinstance(value, int | float) else value

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        root = Path(self.storage.filesystem.rootdirectory).resolve()
        return f"sqlite:///{root / 'wharf.db'}"


def _merge_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("_")
        if not all(path):
            raise ConfigError(f"environment variable {name}: not a configuration key")
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name}: {part!r} is not a section")
            node = child
        node[path[-1]] = yaml.safe_load(raw) if raw else ""
    return data


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  unknown key {key!r}")
        else:
            lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the YAML file (if any), apply the environment, and validate every key."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"configuration {path} must be a mapping of keys to values")
        data = loaded or {}
    data = _merge_env(data, environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc
