"""Garbage collection: one engine that plans, then applies exactly its plan.

Mark: live are every manifest (with ``delete_untagged``, every tagged one), everything a
live index lists, every referrer whose subject is live, and anything pushed within the
grace period; every blob a live manifest names is live, and so is every blob seen (pushed,
mounted, or found by a HEAD) within the grace period. Garbage is the rest, plus files on
storage that no row knows (a crash's leftovers), once older than the grace period.

Sweep: manifests first (an index before its children, a subject before its referrers),
each deleted only if it is still garbage when its row is locked; then blobs, a batch at a
time inside the batch's digest critical sections: rows first, bytes second, so a crash
between leaves bytes without a row (collected next time), never a row without bytes.

A dry run is the same plan, reported instead of applied (invariant 4).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from ..meta.events import Event
from ..meta.gc import GCManifest, GCRun
from ..meta.store import MetadataStore
from ..storage.base import BlobStore, StoredBlob
from . import gc_defaults
from .caller import Caller
from .deleting import GCLockLost as GCLockLost
from .deleting import delete_bytes

if TYPE_CHECKING:
    from ..meta.engines import HeldLock

T = TypeVar("T")

GC_ACTOR = "garbage-collector"
# The setting an import of a Distribution directory leaves until it has finished: a storage
# scan must not take the blobs of repositories not imported yet for files no row knows.
IMPORTING = "distributionImport"
INTERRUPTED = "interrupted: its process ended before it finished (what it freed was not recorded)"
MANIFEST_BATCH = 200
# Byte deletions in flight at once (storage round trips dominate on S3).
DELETE_CONCURRENCY = 16


class GCBusy(Exception):
    """Another garbage collection holds the lock (only one runs at a time, invariant 6)."""


@dataclass(frozen=True)
class GCOptions:
    dry_run: bool = gc_defaults.DRY_RUN
    delete_untagged: bool = gc_defaults.DELETE_UNTAGGED
    grace: timedelta = gc_defaults.GRACE_PERIOD
    # Read every row, not only the review queues, and list all of storage for files no
    # row knows: a thorough run, whose work grows with the registry.
    scan_storage: bool = gc_defaults.SCAN_STORAGE
    mode: str = "offline"  # how it was started: offline (CLI), online, readonly
    verbose: bool = False  # list every marked manifest and blob (as Distribution does)
    batch: int = gc_defaults.BATCH  # blobs per critical section


@dataclass(frozen=True)
class GraceKept:
    """Blobs kept only by the grace period: those a run with a grace of 0 would delete too
    (seen within it themselves, or named only by manifests pushed within it). ``until``:
    when the last of them stops being within it."""

    blobs: int = 0
    bytes: int = 0
    until: datetime | None = None


@dataclass
class Plan:
    cutoff: datetime
    live: list[GCManifest]
    manifests: list[GCManifest]  # to delete, in this order
    blobs: list[tuple[str, int]]  # (digest, size) of blob rows to delete
    orphans: list[StoredBlob]  # files on storage that no row knows (found by a storage scan)
    blobs_marked: int
    # (digest, size) whose rows an earlier run deleted and whose bytes are still stored (it
    # crashed, or could not delete them), with no row again: their bytes go.
    pending: list[tuple[str, int]] = field(default_factory=list)
    # Journal entries whose bytes the earlier run deleted (nothing left to free, nor
    # counted), and whose delete is finished all the same: on a filesystem it may have been
    # killed between the file and its directory.
    vanished: list[str] = field(default_factory=list)
    # Journal entries only to forget: stored again since (a row says so: the bytes are a
    # new blob's).
    settled: list[str] = field(default_factory=list)
    # Queue entries (with their hits) found kept for good, to take off the review queues.
    reviewed_manifests: dict[int, int] = field(default_factory=dict)
    reviewed_blobs: dict[str, int] = field(default_factory=dict)
    grace_kept: GraceKept = field(default_factory=GraceKept)

    @property
    def blob_count(self) -> int:
        """Blobs the plan deletes: rows, files no row knows, and a crashed run's leftovers."""
        return len(self.blobs) + len(self.orphans) + len(self.pending)

    @property
    def bytes(self) -> int:
        return (
            sum(size for _digest, size in self.blobs)
            + sum(f.size for f in self.orphans)
            + sum(size for _digest, size in self.pending)
        )


@dataclass
class Outcome:
    run: GCRun
    plan: Plan
    deleted_manifests: list[GCManifest] = field(default_factory=list)
    deleted_blobs: list[tuple[str, int]] = field(default_factory=list)
    deleted_files: list[StoredBlob] = field(default_factory=list)


Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # phase, done, total


def _quiet(_line: str) -> None:
    pass


def _no_progress(_phase: str, _done: int, _total: int) -> None:
    pass


def _run_detail(run: GCRun) -> dict[str, object]:
    fields = ("id", "status", "reason", "dry_run", "delete_untagged", "mode", "blobs_deleted")
    detail: dict[str, object] = {name: getattr(run, name) for name in fields}
    detail.update(manifests_deleted=run.manifests_deleted, bytes_freed=run.bytes_freed)
    return detail


def mark(
    manifests: Sequence[GCManifest], cutoff: datetime, delete_untagged: bool
) -> tuple[list[GCManifest], list[GCManifest]]:
    """(live, garbage) manifests; garbage in the order it may be deleted."""
    by_key = {(m.repository, m.digest): m for m in manifests}
    referrers: dict[tuple[str, str], list[GCManifest]] = {}
    for m in manifests:
        if m.subject is not None:
            referrers.setdefault((m.repository, m.subject), []).append(m)
    stack = [
        m for m in manifests if m.tagged or m.seen_at >= cutoff or (m.subject is None and not delete_untagged)
    ]
    live: dict[int, GCManifest] = {}
    while stack:
        m = stack.pop()
        if m.id in live:
            continue
        live[m.id] = m
        for child in m.children:
            found = by_key.get((m.repository, child))
            if found is not None and found.id not in live:
                stack.append(found)
        stack.extend(r for r in referrers.get((m.repository, m.digest), ()) if r.id not in live)
    garbage = [m for m in manifests if m.id not in live]
    return [m for m in manifests if m.id in live], deletion_order(garbage)


def deletion_order(garbage: Sequence[GCManifest]) -> list[GCManifest]:
    """An index before the children it lists, a subject before its referrers: each one's
    last reason to be kept is gone when its turn comes."""
    by_key = {(m.repository, m.digest): m for m in garbage}
    before: dict[int, set[int]] = {m.id: set() for m in garbage}  # id -> ids that must go first
    for m in garbage:
        for child in m.children:
            found = by_key.get((m.repository, child))
            if found is not None and found.id != m.id:
                before[found.id].add(m.id)
        if m.subject is not None:
            found = by_key.get((m.repository, m.subject))
            if found is not None and found.id != m.id:
                before[m.id].add(found.id)
    ordered: list[GCManifest] = []
    done: set[int] = set()
    pending = sorted(garbage, key=lambda m: (m.repository, m.digest))
    while pending:
        ready = [m for m in pending if before[m.id] <= done]
        if not ready:  # cannot happen with content-addressed manifests; keep going anyway
            ready = pending[:1]
        for m in ready:
            ordered.append(m)
            done.add(m.id)
        ready_ids = {m.id for m in ready}
        pending = [m for m in pending if m.id not in ready_ids]
    return ordered


def _batches(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class GarbageCollector:
    def __init__(self, meta: MetadataStore, storage: BlobStore) -> None:
        self.meta = meta
        self.storage = storage

    async def plan(self, options: GCOptions, say: Say = _quiet, progress: Progress = _no_progress) -> Plan:
        cutoff = datetime.now(UTC) - options.grace
        progress("mark", 0, 1)
        full = options.scan_storage  # a thorough run reads every row, not just the queues
        queue: dict[int, int] = {}
        if full:
            manifests = await self.meta.gc.manifests()
        else:
            manifests, queue = await self._queued_manifests(cutoff, options.delete_untagged)
        live, garbage = mark(manifests, cutoff, options.delete_untagged)
        if options.verbose:  # the listing names every live manifest: all are read, to print
            gone = {m.id for m in garbage}
            for manifest_id, repository, digest, named in await self.meta.gc.listing():
                if manifest_id not in gone:
                    say(f"{repository}: marking manifest {digest}")
                    for blob in named:
                        say(f"{repository}: marking blob {blob}")
        for m in garbage:
            say(f"{m.repository}: manifest eligible for deletion: {m.digest}")
        blobs, reviewed_blobs = await self.meta.gc.blob_candidates(cutoff, [m.id for m in garbage], full)
        # Queued manifests kept by a tag, directly or through an index or a subject, leave
        # the queue: losing that reason queues them again. Those kept only by the grace
        # period or by being untagged in a run without --delete-untagged stay queued.
        for_good, _garbage = mark(manifests, datetime.max.replace(tzinfo=UTC), True)
        reviewed = {m.id: queue[m.id] for m in for_good if m.id in queue}
        progress("mark", 1, 1)
        pending, vanished, settled = await self._journal()
        orphans: list[StoredBlob] = []
        importing = (await self.meta.jobs.get_setting(IMPORTING) or {}).get("root")
        if options.scan_storage and importing:
            say(
                f"an import of {importing} has not finished: files no row knows may be blobs it has "
                "yet to adopt, so they are kept (run the import again to finish it)"
            )
        elif options.scan_storage:
            journalled = {digest for digest, _size in pending} | set(vanished) | set(settled)
            orphans = await self._orphans(cutoff, {m.digest for m in live} | journalled, progress)
        total = await self.meta.blobs.count()
        plan = Plan(cutoff, live, garbage, blobs, orphans, total - len(blobs), pending, vanished, settled)
        plan.reviewed_manifests, plan.reviewed_blobs = reviewed, reviewed_blobs
        plan.grace_kept = await self._kept_by_grace(manifests, plan, options)
        return plan

    async def _kept_by_grace(
        self, manifests: Sequence[GCManifest], plan: Plan, options: GCOptions
    ) -> GraceKept:
        """What the same plan with a grace of 0 would delete beyond this one's blobs."""
        if options.grace <= timedelta(0):
            return GraceKept()
        now = plan.cutoff + options.grace
        _live, garbage = mark(manifests, now, options.delete_untagged)
        without_grace, _reviewed = await self.meta.gc.blob_candidates(
            now, [m.id for m in garbage], options.scan_storage
        )
        planned = {digest for digest, _size in plan.blobs}
        kept = [(digest, size) for digest, size in without_grace if digest not in planned]
        if not kept:
            return GraceKept()
        going = {m.id for m in plan.manifests}
        seen = [m.seen_at for m in garbage if m.id not in going]  # manifests kept by it
        latest = await self.meta.blobs.last_seen([digest for digest, _size in kept])
        if latest is not None:
            seen.append(latest)
        until = max(seen) + options.grace if seen else None
        return GraceKept(len(kept), sum(size for _digest, size in kept), until)

    async def _delete_bytes(self, digests: Sequence[str]) -> set[str]:
        """Inside their digest section (see ``deleting.delete_bytes``): if its locks have gone,
        rows already deleted stay journalled, a leak for the next run."""
        return await delete_bytes(self.meta, self.storage, digests)

    async def _journal(self) -> tuple[list[tuple[str, int]], list[str], list[str]]:
        """The journal of earlier runs, split: (digest, size) whose bytes are still stored and
        that no row names again, to delete and count; those whose bytes are gone, to finish
        deleting uncounted; and those stored again, only to forget. So a dry run counts
        exactly what the run frees, and neither counts bytes gone already."""
        journal = await self.meta.gc.pending()
        if not journal:
            return [], [], []
        stored_again = await self.meta.blobs.present([digest for digest, _size in journal])
        limit = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def present(digest: str) -> bool:
            async with limit:
                return await self.storage.stat(digest) is not None

        candidates = [(digest, size) for digest, size in journal if digest not in stored_again]
        found = await asyncio.gather(*(present(digest) for digest, _size in candidates))
        pending = [entry for entry, there in zip(candidates, found, strict=True) if there]
        vanished = [digest for (digest, _size), there in zip(candidates, found, strict=True) if not there]
        return pending, vanished, sorted(stored_again)

    async def _queued_manifests(
        self, cutoff: datetime, delete_untagged: bool
    ) -> tuple[list[GCManifest], dict[int, int]]:
        """The queued manifests and every manifest their fate depends on: the indexes that
        list them and their subjects, up to the top (so ``mark`` over these alone decides
        exactly as over all of them), and what a garbage one lists or is the subject of
        (which may be garbage too), with theirs in turn. Also the queue, with its hits."""
        queue = await self.meta.gc.manifest_queue()
        known: dict[int, GCManifest] = {}
        new = await self.meta.gc.manifests_around(ids=queue) if queue else []
        while new:
            while new:  # upwards
                known.update((m.id, m) for m in new)
                parents = [(m.repository, m.digest) for m in new]
                subjects = [(m.repository, m.subject) for m in new if m.subject is not None]
                found = await self.meta.gc.manifests_around(parents_of=parents, keys=subjects)
                new = [m for m in found if m.id not in known]
            _live, garbage = mark(list(known.values()), cutoff, delete_untagged)
            children = [(g.repository, child) for g in garbage for child in g.children]
            subjects = [(g.repository, g.digest) for g in garbage]
            found = (
                await self.meta.gc.manifests_around(keys=children, referrers_of=subjects) if garbage else []
            )
            new = [m for m in found if m.id not in known]  # downwards, then up from there
        return list(known.values()), queue

    async def _orphans(self, cutoff: datetime, keep: set[str], progress: Progress) -> list[StoredBlob]:
        """Files older than the grace period that no blob row knows. A file holding a live
        manifest's payload (adopted from a Distribution directory) is kept, as
        Distribution keeps it. Names are listed first; only the unknown ones are looked at."""
        listed: set[str] = set()
        async for digest in self.storage.list():
            listed.add(digest)
            if len(listed) % 10_000 == 0:
                progress("scan", len(listed), 0)
        unknown = sorted(listed - keep - await self.meta.blobs.present(listed))
        limit = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def describe(digest: str) -> StoredBlob | None:
            async with limit:
                return await self.storage.describe(digest)

        found = await asyncio.gather(*(describe(digest) for digest in unknown))
        return [f for f in found if f is not None and f.modified < cutoff]

    async def run(
        self,
        caller: Caller,
        options: GCOptions,
        say: Say = _quiet,
        progress: Progress = _no_progress,
        should_stop: Callable[[], str | None] = lambda: None,
        while_held: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> Outcome:
        """Plan and, unless a dry run, apply. ``should_stop`` is asked between batches; a
        reason it returns ends the run there (what is left waits for the next run).
        ``while_held`` is entered once the lock is held and left before it is released
        (a read-only window, say, which must not begin while another run is going).
        ``caller``: who asked (the command line, or the job worker); what the run records
        is the collector's doing, under its own name (GC_ACTOR)."""
        async with self.meta.gc_lock() as held, contextlib.AsyncExitStack() as window:
            if not held:
                raise GCBusy("another garbage collection is running; try again when it has finished")
            if while_held is not None:
                await window.enter_async_context(while_held())
            # Holding the lock, no other run can be going: one still recorded as running ended
            # with its process (killed), before it could say so.
            await self.meta.gc.close_interrupted(INTERRUPTED)
            run = GCRun(
                started_at=datetime.now(UTC),
                dry_run=options.dry_run,
                delete_untagged=options.delete_untagged,
                mode=options.mode,
                grace_seconds=options.grace.total_seconds(),
            )
            await self.meta.gc.save_run(run)
            try:
                plan = await self.plan(options, say, progress)
                run.blobs_marked = plan.blobs_marked
                run.blobs_eligible = plan.blob_count
                run.manifests_eligible = len(plan.manifests)
                run.bytes_eligible = plan.bytes
                run.grace_kept_blobs = plan.grace_kept.blobs
                run.grace_kept_bytes = plan.grace_kept.bytes
                run.grace_kept_until = plan.grace_kept.until
                say(f"{plan.blobs_marked} blobs marked, {run.blobs_eligible} blobs eligible for deletion")
                say(f"{len(plan.manifests)} manifests eligible for deletion")
                for digest, _size in plan.blobs:
                    say(f"blob eligible for deletion: {digest}")
                for stored in plan.orphans:
                    say(f"blob eligible for deletion: {stored.digest} (on storage, unknown to the database)")
                for digest, _size in plan.pending:
                    say(f"blob eligible for deletion: {digest} (left by an interrupted collection)")
                for digest in plan.vanished:
                    say(f"blob delete to finish: {digest} (its bytes went with an interrupted collection)")
                outcome = Outcome(run, plan)
                if not options.dry_run:
                    await self._apply(outcome, options, say, progress, should_stop, held)
                if run.status == "running":
                    run.status = "done"
            except BaseException as error:
                run.status = "failed"
                run.reason = f"{type(error).__name__}: {error}"
                if isinstance(error, asyncio.CancelledError):  # its job handed back, say
                    run.status, run.reason = "stopped", "cancelled; what is left is collected next time"
                run.ended_at = datetime.now(UTC)
                await asyncio.shield(self.meta.gc.save_run(run))
                raise
            run.ended_at = datetime.now(UTC)
            await self.meta.gc.save_run(run)
            await self.meta.events.record(Event(GC_ACTOR, "gc.run", detail=_run_detail(run)))
            return outcome

    async def _apply(
        self,
        outcome: Outcome,
        options: GCOptions,
        say: Say,
        progress: Progress,
        should_stop: Callable[[], str | None],
        lock: HeldLock,
    ) -> None:
        plan, run = outcome.plan, outcome.run
        size = max(1, options.batch)

        async def stopped() -> bool:
            if await lock.lost():  # one query a batch, on the lock's own connection
                raise GCLockLost("the GC lock was lost (its database connection ended)")
            reason = should_stop()
            if reason is not None:
                run.status, run.reason = "stopped", reason
            return reason is not None

        async def finish_pending(entries: Sequence[tuple[str, int]], counted: bool = True) -> None:
            digests = [digest for digest, _size in entries]
            # A push may have stored one of them again since the plan: its row says so now.
            known = await self.meta.blobs.present(digests)
            leftovers = [(digest, size) for digest, size in entries if digest not in known]
            failed = await self._delete_bytes([digest for digest, _size in leftovers])
            # What storage could not delete stays journalled, for the next run.
            await self.meta.gc.forget_pending([digest for digest in digests if digest not in failed])
            leftovers = [(digest, size) for digest, size in leftovers if digest not in failed]
            if failed:
                say(f"could not delete {len(failed)} blobs' bytes; the next run tries again")
            if not counted:
                return
            run.files_deleted += len(leftovers)
            run.blobs_deleted += len(leftovers)
            run.bytes_freed += sum(size for _digest, size in leftovers)

        if plan.settled:
            await self.meta.gc.forget_pending(plan.settled)
        for pending_batch in _batches(plan.pending, size):
            if await stopped():
                return
            digests = [digest for digest, _size in pending_batch]
            await self.meta.digest_section(digests, partial(finish_pending, pending_batch))
        for vanished_batch in _batches(plan.vanished, size):
            if await stopped():
                return
            entries = [(digest, 0) for digest in vanished_batch]
            await self.meta.digest_section(vanished_batch, partial(finish_pending, entries, False))

        if await stopped():  # the first write that needs the lock when nothing was pending
            return
        await self.meta.gc.forget_reviewed(plan.reviewed_manifests, plan.reviewed_blobs)

        by_id = {m.id: m for m in plan.manifests}
        ids = [m.id for m in plan.manifests]
        done = 0
        for batch in _batches(ids, min(MANIFEST_BATCH, size)):
            if await stopped():
                return
            deleted = await self.meta.gc.delete_manifests(batch, plan.cutoff, run.delete_untagged, GC_ACTOR)
            outcome.deleted_manifests.extend(by_id[i] for i in deleted)
            run.manifests_deleted += len(deleted)
            done += len(batch)
            progress("manifests", done, len(ids))

        if not await self._delete_blobs(outcome, size, say, progress, stopped):
            return

        async def delete_orphans(files: Sequence[StoredBlob]) -> None:
            # A push may have committed one of them since the scan: its row says so now.
            known = await self.meta.blobs.present([f.digest for f in files])
            unknown = [f for f in files if f.digest not in known]
            failed = await self._delete_bytes([f.digest for f in unknown])
            unknown = [f for f in unknown if f.digest not in failed]  # not freed: found again next scan
            outcome.deleted_files.extend(unknown)
            run.files_deleted += len(unknown)
            run.blobs_deleted += len(unknown)
            run.bytes_freed += sum(f.size for f in unknown)

        done = 0
        for file_batch in _batches(plan.orphans, size):
            if await stopped():
                return
            await self.meta.digest_section(
                [f.digest for f in file_batch], partial(delete_orphans, file_batch)
            )
            done += len(file_batch)
            progress("files", done, len(plan.orphans))

    async def _delete_blobs(
        self,
        outcome: Outcome,
        size: int,
        say: Say,
        progress: Progress,
        stopped: Callable[[], Awaitable[bool]],
    ) -> bool:
        """Rows first (journalled as pending), then the bytes, then the journal entries: a
        crash anywhere leaves bytes without a row, which the next run finishes. The journal
        is cleared once at the end (a crash before that makes the next run look again at
        digests already gone, which costs a lookup and nothing else). False if stopped.

        A batch once begun always ends, even if this is cancelled (a job handed back at
        shutdown): ``digest_section`` holds its locks until its bytes are gone."""
        plan, run = outcome.plan, outcome.run
        done = 0

        async def sweep(digests: list[str]) -> None:
            gone = await self.meta.gc.delete_blobs(digests, plan.cutoff)
            failed = await self._delete_bytes([digest for digest, _size in gone])
            # Bytes storage could not delete are not freed: they stay journalled (not in
            # deleted_blobs, whose journal entries are forgotten below), for the next run.
            gone = [(digest, size) for digest, size in gone if digest not in failed]
            if failed:
                say(f"could not delete {len(failed)} blobs' bytes; the next run tries again")
            outcome.deleted_blobs.extend(gone)
            run.blobs_deleted += len(gone)
            run.bytes_freed += sum(size for _digest, size in gone)

        try:
            for blob_batch in _batches(plan.blobs, size):
                if await stopped():
                    return False
                digests = [digest for digest, _size in blob_batch]
                await self.meta.digest_section(digests, partial(sweep, digests))
                done += len(blob_batch)
                progress("blobs", done, len(plan.blobs))
                say(f"deleted {run.blobs_deleted} of {len(plan.blobs)} blobs so far")
        finally:
            if outcome.deleted_blobs:
                await asyncio.shield(
                    self.meta.gc.forget_pending([digest for digest, _size in outcome.deleted_blobs])
                )
        return True
