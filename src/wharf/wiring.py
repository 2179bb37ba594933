"""Building the stores and services from the settings, for every entry point (the ASGI app
and the CLI commands); nothing here imports the web stack."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import Settings, parse_duration
from .meta.sql import SQLMetadataStore
from .services.policy import Policy
from .services.registry import Registry
from .services.schedules import ScheduleService
from .storage.base import BlobStore
from .storage.filesystem import FilesystemBlobStore

if TYPE_CHECKING:
    from .services.jobs import JobRunner


def build_storage(settings: Settings) -> BlobStore:
    s3 = settings.storage.s3
    if s3 is None:
        return FilesystemBlobStore(settings.storage.filesystem.rootdirectory, fsync=settings.storage.fsync)
    from .storage.s3 import S3BlobStore

    return S3BlobStore(
        s3.bucket,
        region=s3.region,
        endpoint=s3.regionendpoint or None,
        access_key=s3.accesskey or None,
        secret_key=s3.secretkey or None,
        root=s3.rootdirectory,
        path_style=s3.forcepathstyle,
        verify=not s3.skipverify,
        spool_directory=s3.spooldirectory or None,
    )


def build_registry(settings: Settings) -> Registry:
    storage = build_storage(settings)
    meta = SQLMetadataStore(settings.database_url)
    policy = Policy(
        delete_enabled=settings.storage.delete.enabled,
        readonly=settings.storage.maintenance.readonly.enabled,
        redirect=not settings.storage.redirect.disable,
    )
    return Registry.build(meta, storage, policy)


def build_runner(settings: Settings, registry: Registry) -> JobRunner:
    """The job worker: every action Wharf knows, with the configured timing."""
    # Imported here: the jobs module brings prometheus_client (16 ms), which the command
    # line's garbage collection has no use for.
    from .services.jobs import REGISTRY_GC, JobRunner, Timing, gc_action

    jobs = settings.jobs
    timing = Timing(
        poll=parse_duration(jobs.poll).total_seconds(),
        heartbeat=parse_duration(jobs.heartbeat).total_seconds(),
        stale=parse_duration(jobs.stale).total_seconds(),
    )
    schedules = ScheduleService(registry.meta, settings.gc.grace_period)
    actions = {REGISTRY_GC: gc_action(registry.gc)}
    return JobRunner(registry.meta, actions, timing, schedules=schedules, policy=registry.policy)
