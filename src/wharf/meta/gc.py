"""Garbage collection's rows: the plan's queries, the review queues, the journal of deleted
rows whose bytes may remain, the leases of deletions under way, and the record of runs."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


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


class GCRows(Protocol):
    # The plan.
    async def manifests(self) -> list[GCManifest]:
        """Every manifest, with what makes it live or not."""

    async def listing(self) -> list[tuple[int, str, str, tuple[str, ...]]]:
        """(id, repository, digest, blobs named) of every manifest, in byte order of
        repository and digest: what a collection's listing prints."""

    async def manifest_queue(self) -> dict[int, int]:
        """The manifests queued for review (something may have made them garbage), with
        their ``hits``: pass those found kept for good to ``forget_reviewed``."""

    async def manifests_around(
        self,
        ids: Collection[int] = (),
        parents_of: Collection[tuple[str, str]] = (),
        keys: Collection[tuple[str, str]] = (),
        referrers_of: Collection[tuple[str, str]] = (),
    ) -> list[GCManifest]:
        """As ``manifests``, for the manifests with these ids, the indexes listing these
        (repository, digest) pairs, the manifests with these keys, and the referrers of
        these subjects."""

    async def blob_candidates(
        self, cutoff: datetime, dropped: Collection[int], full: bool = True
    ) -> tuple[list[tuple[str, int]], dict[str, int]]:
        """(digest, size) of every blob seen before ``cutoff`` that no manifest names once the
        manifests ``dropped`` are gone: among every blob when ``full``, else among the queued
        ones. Also the queued blobs found named by a manifest, with their ``hits``."""

    async def forget_reviewed(self, manifests: dict[int, int], blobs: dict[str, int]) -> None:
        """Take reviewed entries off the queues, each only if its ``hits`` are unchanged."""

    # The sweep.
    async def delete_manifests(
        self, ids: Sequence[int], cutoff: datetime, delete_untagged: bool, actor: str
    ) -> list[int]:
        """Delete these manifests, in this order, each only if it is still garbage (untagged,
        seen before ``cutoff``, listed by no index, its subject gone, or without a subject
        when ``delete_untagged``); the ids deleted."""

    async def delete_blobs(self, digests: Collection[str], cutoff: datetime) -> list[tuple[str, int]]:
        """Delete the rows (and repository links) of those blobs that are still garbage, and
        note them as pending; call it inside their ``digest_section``, delete the bytes of
        what it returns, then ``forget_pending`` them."""

    async def pending(self) -> list[tuple[str, int]]:
        """(digest, size) of blobs whose rows a collection deleted and whose bytes it may not
        have deleted (size 0 when journalled before sizes were kept)."""

    async def forget_pending(self, digests: Collection[str]) -> None: ...

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

    # The record of runs.
    async def save_run(self, run: GCRun) -> GCRun: ...
    async def close_interrupted(self, reason: str) -> int:
        """Mark the runs still recorded as running as failed, for ``reason``; call it holding
        ``gc_lock``, when no run can be running. How many there were."""

    async def runs(self, limit: int = 20) -> list[GCRun]: ...
    async def last_savings(self) -> GCRun | None:
        """The newest real (not dry) run that completed (done, or stopped part way), however
        many other runs came after it."""

    async def totals(self) -> list[GCTotals]:
        """Every run recorded, added up by (status, dry_run): what all replicas collected."""
