"""The metadata store protocol: what services may ask of the database, whatever the backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from .engines import HeldLock

T = TypeVar("T")


class MissingReference(Exception):
    """A manifest names a blob or child manifest that the repository does not hold."""

    def __init__(self, kind: str, digest: str) -> None:
        self.kind = kind  # "blob" or "manifest"
        self.digest = digest
        super().__init__(f"{kind} {digest} unknown")


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    media_type: str
    payload: bytes


@dataclass(frozen=True)
class NewManifest:
    """Everything the store records for one manifest put, computed by the manifest service."""

    digest: str
    media_type: str
    payload: bytes
    config_digest: str | None
    subject_digest: str | None
    artifact_type: str | None
    blobs: Sequence[str] = ()
    children: Sequence[str] = ()


@dataclass(frozen=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    payload: bytes


@dataclass(frozen=True)
class Upload:
    id: str
    repository: str
    offset: int


class TooManyUploads(Exception):
    """The repository holds as many open uploads as it may."""

    def __init__(self, open_uploads: int) -> None:
        super().__init__(f"{open_uploads} uploads open")
        self.open = open_uploads


@dataclass(frozen=True)
class IdleUpload:
    """An upload in progress with when a request last wrote to it."""

    id: str
    repository: str
    offset: int
    updated_at: datetime


@dataclass(frozen=True)
class Event:
    actor: str
    action: str
    repository: str | None = None
    reference: str | None = None
    digest: str | None = None
    detail: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class ImportedBlob:
    digest: str
    size: int
    modified: datetime  # when it was last written: its grace period counts from here


@dataclass(frozen=True)
class GCManifest:
    """One manifest as garbage collection sees it."""

    id: int
    repository: str
    digest: str
    subject: str | None
    tagged: bool
    seen_at: datetime  # last pushed
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckedManifest:
    """One manifest as ``wharf fsck`` checks it: what it names, and the tags naming it."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    blobs: tuple[str, ...]  # its config and layers
    children: tuple[str, ...]  # the manifests an index lists


@dataclass(frozen=True)
class RegistrySnapshot:
    """Every blob row and every manifest's references, read as of one moment."""

    blobs: dict[str, int]  # digest -> size, every blob row
    manifests: list[CheckedManifest]
    # (repository, tag, digest) of tags pointing at a manifest the repository does not hold.
    dangling_tags: list[tuple[str, str, str]]


@dataclass
class GCRun:
    """One garbage collection's record: what it found, what it freed, how it ended."""

    started_at: datetime
    dry_run: bool
    delete_untagged: bool
    mode: str
    grace_seconds: float
    status: str = "running"
    reason: str | None = None
    ended_at: datetime | None = None
    blobs_marked: int = 0
    blobs_eligible: int = 0
    manifests_eligible: int = 0
    blobs_deleted: int = 0
    manifests_deleted: int = 0
    bytes_freed: int = 0
    files_deleted: int = 0
    bytes_eligible: int = 0  # what the plan would free: a dry run's answer
    # Blobs kept only because they (or a manifest naming them) were seen within the grace
    # period: what a run with a grace of 0 would delete too, and when all of them are due.
    grace_kept_blobs: int = 0
    grace_kept_bytes: int = 0
    grace_kept_until: datetime | None = None
    id: int | None = None


@dataclass(frozen=True)
class GCTotals:
    """The garbage collection runs of one status and kind (dry or not), added up."""

    status: str
    dry_run: bool
    runs: int
    blobs_deleted: int
    manifests_deleted: int
    bytes_freed: int
    last_ended_at: datetime | None


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


class JobStore(Protocol):
    async def create(
        self, action: str, parameters: dict[str, Any] | None = None, max_attempts: int = 3
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


class MetadataStore(Protocol):
    @property
    def jobs(self) -> JobStore: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise unless the database answers (and its schema is there)."""

    # Coordination.
    async def digest_section(self, digests: Collection[str], body: Callable[[], Awaitable[T]]) -> T:
        """Run ``body`` inside one critical section per digest, across processes and replicas:
        storing a blob's bytes and recording its row happen inside it, and so do deleting
        the row and then the bytes, so neither can interleave with the other (GC invariant
        3). The body runs as a task of its own and the locks outlive it, whatever cancels
        the caller (see ``engines.run_in_section``): the one way into a section."""

    async def digest_section_held(self) -> bool:
        """Inside a ``digest_section`` body: whether its locks are still held (on PostgreSQL
        they go with their database connection). A deleter asks before deleting bytes."""

    def gc_lock(self) -> AbstractAsyncContextManager[HeldLock]:
        """Held for a whole garbage collection; yields a false handle when another one runs
        (invariant 6). Its ``lost()`` says whether the lock has gone since (on PostgreSQL,
        with its database connection): the collection asks before every batch."""

    # Blobs and their links to repositories.
    async def linked_blob_size(self, repository: str, digest: str) -> int | None:
        """The blob's size when the repository may read it: linked there, or named by a manifest there."""

    async def link_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        event: Event | None = None,
        finished_upload: str | None = None,
    ) -> None:
        """Record the blob and link it into the repository; also drops ``finished_upload``'s row."""

    async def unlink_blob(self, repository: str, digest: str, event: Event) -> bool: ...

    async def touch_blob(self, repository: str, digest: str) -> int | None:
        """``linked_blob_size``, also recording that a client saw the blob now (a HEAD in a
        push): garbage collection spares it for its grace period."""

    async def mount_blob(self, repository: str, source: str, digest: str, event: Event) -> int | None:
        """Link a blob that ``source`` may read into ``repository``; its size, or None when
        ``source`` cannot read it (then nothing changes)."""

    # Uploads in progress.
    async def create_upload(self, upload_id: str, repository: str, limit: int | None = None) -> Upload:
        """A new upload session; TooManyUploads when ``repository`` holds ``limit`` open already
        (counted in the same transaction: concurrent starts may pass it by a few)."""

    async def get_upload(self, upload_id: str) -> Upload | None: ...
    async def set_upload_offset(self, upload_id: str, expected: int, offset: int) -> bool: ...
    async def delete_upload(self, upload_id: str) -> bool: ...
    async def idle_uploads(self, before: datetime) -> list[IdleUpload]:
        """Uploads last written to (or started, when never written) before ``before``, oldest first."""

    async def purge_upload(self, upload_id: str, before: datetime) -> bool:
        """Delete the upload's row if it is still idle since before ``before`` (a request that
        wrote to it meanwhile keeps it); whether it was deleted."""

    # Manifests and tags.
    async def put_manifest(
        self, repository: str, manifest: NewManifest, tag: str | None, event: Event
    ) -> None: ...
    async def get_manifest(self, repository: str, reference: str) -> StoredManifest | None: ...
    async def delete_manifest(self, repository: str, digest: str, event: Event) -> list[str] | None: ...
    async def delete_tag(self, repository: str, tag: str, event: Event) -> bool: ...
    async def import_repository(
        self,
        repository: str,
        blobs: Sequence[ImportedBlob],
        manifests: Sequence[NewManifest],
        tags: dict[str, str],
        event: Event,
    ) -> dict[str, int]:
        """Add, in one transaction, what is not there yet: blobs linked into the repository,
        manifests (children before their indexes) and tags. Counts of rows added, by kind."""

    async def delete_repository(self, repository: str, event: Event) -> bool:
        """The repository leaves with its manifests, tags and links; its blobs wait for GC."""

    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str] | None: ...
    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        """The names of the repositories holding at least one manifest, in byte order."""

    async def referrers(self, repository: str, digest: str, artifact_type: str | None) -> list[Referrer]: ...

    # Garbage collection.
    async def gc_manifests(self) -> list[GCManifest]:
        """Every manifest, with what makes it live or not."""

    async def gc_listing(self) -> list[tuple[int, str, str, tuple[str, ...]]]:
        """(id, repository, digest, blobs named) of every manifest, in byte order of
        repository and digest: what a collection's listing prints."""

    async def gc_delete_manifests(
        self, ids: Sequence[int], cutoff: datetime, delete_untagged: bool, actor: str
    ) -> list[int]:
        """Delete these manifests, in this order, each only if it is still garbage (untagged,
        seen before ``cutoff``, listed by no index, its subject gone, or without a subject
        when ``delete_untagged``); the ids deleted."""

    async def gc_manifest_queue(self) -> dict[int, int]:
        """The manifests queued for review (something may have made them garbage), with
        their ``hits``: pass those found kept for good to ``gc_forget_reviewed``."""

    async def gc_manifests_around(
        self,
        ids: Collection[int] = (),
        parents_of: Collection[tuple[str, str]] = (),
        keys: Collection[tuple[str, str]] = (),
        referrers_of: Collection[tuple[str, str]] = (),
    ) -> list[GCManifest]:
        """As ``gc_manifests``, for the manifests with these ids, the indexes listing these
        (repository, digest) pairs, the manifests with these keys, and the referrers of
        these subjects."""

    async def gc_blob_candidates(
        self, cutoff: datetime, dropped: Collection[int], full: bool = True
    ) -> tuple[list[tuple[str, int]], dict[str, int]]:
        """(digest, size) of every blob seen before ``cutoff`` that no manifest names once the
        manifests ``dropped`` are gone: among every blob when ``full``, else among the queued
        ones. Also the queued blobs found named by a manifest, with their ``hits``."""

    async def gc_forget_reviewed(self, manifests: dict[int, int], blobs: dict[str, int]) -> None:
        """Take reviewed entries off the queues, each only if its ``hits`` are unchanged."""

    async def gc_delete_blobs(self, digests: Collection[str], cutoff: datetime) -> list[tuple[str, int]]:
        """Delete the rows (and repository links) of those blobs that are still garbage, and
        note them as pending; call it inside their ``digest_section``, delete the bytes of
        what it returns, then ``gc_forget_pending`` them."""

    async def gc_pending(self) -> list[tuple[str, int]]:
        """(digest, size) of blobs whose rows a collection deleted and whose bytes it may not
        have deleted (size 0 when journalled before sizes were kept)."""

    async def gc_forget_pending(self, digests: Collection[str]) -> None: ...

    async def lease_deletes(self, digests: Collection[str], seconds: float) -> str:
        """Note that these blobs' bytes are being deleted, a deletion that may act for up to
        ``seconds`` from now (by the database's clock); inside their ``digest_section``,
        before deleting. Answers the lease's holder, which only this deletion renews and ends."""

    async def renew_deletes(self, holder: str, seconds: float) -> None:
        """The deletion goes on: its lease lasts at least ``seconds`` from now."""

    async def end_deletes(self, holder: str) -> None:
        """Its deletion has ended (nothing of it can act any more); expired leases go too.
        Another deletion's lease on the same digests stays."""

    async def delete_lease_left(self, digest: str | None = None) -> float | None:
        """Seconds until no deletion of this blob's bytes (with None, of any blob's) can act
        any more, or None when none is under way. A push asks inside the digest's section,
        before storing bytes."""

    async def gc_blob_rows(self, digests: Collection[str]) -> set[str]:
        """Those digests that have a blob row."""

    async def record(self, event: Event) -> None:
        """Add an event to the activity log."""

    async def count_blobs(self) -> int: ...
    async def save_gc_run(self, run: GCRun) -> GCRun: ...
    async def gc_close_interrupted(self, reason: str) -> int:
        """Mark the runs still recorded as running as failed, for ``reason``; call it holding
        ``gc_lock``, when no run can be running. How many there were."""

    async def gc_runs(self, limit: int = 20) -> list[GCRun]: ...
    async def gc_last_savings(self) -> GCRun | None:
        """The newest real (not dry) run that completed (done, or stopped part way), however
        many other runs came after it."""

    async def gc_blobs_seen_until(self, digests: Collection[str]) -> datetime | None:
        """The latest time any of these blobs was seen (pushed, mounted, found by a HEAD)."""

    async def gc_totals(self) -> list[GCTotals]:
        """Every run recorded, added up by (status, dry_run): what all replicas collected."""

    # Checking (wharf fsck).
    async def fsck_snapshot(self) -> RegistrySnapshot:
        """Every blob row and manifest reference in one consistent read (one snapshot of the
        database, however many statements it takes)."""

    async def fsck_blobs(self, digests: Collection[str]) -> dict[str, int]:
        """The sizes of those of these blobs that have a row."""

    async def fsck_links(self, digests: Collection[str]) -> dict[str, tuple[str, ...]]:
        """The repositories each of these blobs is linked into (pushed or mounted there)."""

    # The activity log.
    async def events(
        self,
        limit: int = 100,
        start: int = 0,
        repository: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The activity log, newest first, filtered by whichever of these are given."""
