"""Checking a registry (`wharf fsck`): the database against storage, both ways, and every
manifest's references; with ``repair``, deleting the leaks.

What it finds:
- a blob row without its bytes (or with bytes of another size): a lie, which breaks every
  image naming the blob; each such image is named, with its tags and the indexes above it;
- bytes without a row: a leak (a crash between storing and recording, or a collection's
  journal), harmless but wasted, with its age;
- a manifest naming a blob that has no row, an index listing a manifest its repository does
  not hold, a tag pointing at a missing manifest.

It runs beside a serving registry. The rows come from one snapshot of the database; storage
is looked at afterwards, so whatever seems wrong is looked at again before it is reported:
a row without bytes inside the digest's critical section (where no push or collection of it
can be half way), a leak against the rows as they are by then.

Repair deletes only leaks older than the grace period, holding the garbage collection lock
(so no collection or import runs beside it), each batch inside its digests' critical
sections, where the rows are read again first: a push that recorded one meanwhile keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from ..meta.engines import HeldLock
from ..meta.manifests import CheckedManifest
from ..meta.store import MetadataStore
from ..storage.base import BlobStore
from . import gc_defaults
from .caller import Caller
from .deleting import delete_bytes
from .gc import DELETE_CONCURRENCY, IMPORTING, GCLockLost, Progress

T = TypeVar("T")
R = TypeVar("R")

# Storage round trips in flight at once (a HEAD each on S3).
CONCURRENCY = DELETE_CONCURRENCY


class FsckBusy(Exception):
    """A garbage collection (or an import) holds the lock that a repair needs."""


@dataclass(frozen=True)
class FsckOptions:
    repair: bool = False
    grace: timedelta = gc_defaults.GRACE_PERIOD
    batch: int = gc_defaults.BATCH  # digests per critical section


@dataclass(frozen=True)
class BrokenImage:
    """A manifest that cannot be pulled whole."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    through: str | None = None  # for an index: the child manifest that is broken


@dataclass(frozen=True)
class BrokenBlob:
    """A blob row whose bytes are missing (``stored`` None) or of another size."""

    digest: str
    size: int
    stored: int | None
    images: tuple[BrokenImage, ...]
    repositories: tuple[str, ...]  # linked there (pushed or mounted)


@dataclass(frozen=True)
class MissingReference:
    """A manifest naming a blob without a row, or an index listing an absent manifest."""

    repository: str
    manifest: str
    tags: tuple[str, ...]
    kind: str  # "blob" or "manifest"
    digest: str


@dataclass(frozen=True)
class Leak:
    digest: str
    size: int
    modified: datetime
    journalled: bool  # a collection deleted its row and has yet to delete its bytes


@dataclass
class Repair:
    cutoff: datetime
    deleted: list[Leak] = field(default_factory=list)
    young: list[Leak] = field(default_factory=list)  # within the grace period: kept
    failed: list[Leak] = field(default_factory=list)  # storage would not delete them
    refused: str | None = None  # why nothing was deleted
    stopped: str | None = None

    @property
    def freed(self) -> int:
        return sum(leak.size for leak in self.deleted)


@dataclass
class FsckReport:
    blobs_checked: int = 0
    manifests_checked: int = 0
    files_listed: int = 0
    broken: list[BrokenBlob] = field(default_factory=list)
    missing: list[MissingReference] = field(default_factory=list)
    dangling_tags: list[tuple[str, str, str]] = field(default_factory=list)  # repository, tag, digest
    leaks: list[Leak] = field(default_factory=list)
    importing: str | None = None  # the root of an unfinished Distribution import
    repair: Repair | None = None
    stopped: str | None = None  # the check ended early, for this reason

    @property
    def problems(self) -> int:
        """Rows without bytes and missing references: each one a broken image or tag."""
        return len(self.broken) + len(self.missing) + len(self.dangling_tags)

    def result(self) -> dict[str, Any]:
        """The counts, as a job's result."""
        counts: dict[str, Any] = {
            "ok": self.problems == 0,
            "blobsChecked": self.blobs_checked,
            "manifestsChecked": self.manifests_checked,
            "filesListed": self.files_listed,
            "rowsWithoutBytes": sum(1 for b in self.broken if b.stored is None),
            "rowsWithWrongSize": sum(1 for b in self.broken if b.stored is not None),
            "brokenImages": len({(i.repository, i.digest) for b in self.broken for i in b.images}),
            "missingReferences": len(self.missing),
            "danglingTags": len(self.dangling_tags),
            "leaks": len(self.leaks),
            "leakedBytes": sum(leak.size for leak in self.leaks),
        }
        if self.repair is not None:
            counts.update(
                leaksDeleted=len(self.repair.deleted),
                bytesFreed=self.repair.freed,
                leaksKept=len(self.repair.young),
                leaksNotDeleted=len(self.repair.failed),
                repairRefused=self.repair.refused,
            )
        stopped = self.stopped or (self.repair.stopped if self.repair else None)
        if stopped is not None:
            counts.update(status="stopped", reason=stopped)
        return counts


def _no_progress(_phase: str, _done: int, _total: int) -> None:
    pass


def _batches(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _bounded(
    items: Sequence[T], work: Callable[[T], Awaitable[R]], tick: Callable[[int], None]
) -> list[R]:
    """``work`` over every item, CONCURRENCY at a time (not one task per item: a registry
    can hold millions of blobs), results in order; ``tick(done)`` now and then."""
    results: list[R | None] = [None] * len(items)
    position = 0
    done = 0

    async def worker() -> None:
        nonlocal position, done
        while position < len(items):
            index = position
            position += 1
            results[index] = await work(items[index])
            done += 1
            if done % 500 == 0:
                tick(done)

    await asyncio.gather(*(worker() for _ in range(min(CONCURRENCY, len(items)))))
    tick(len(items))
    return results  # type: ignore[return-value]


class Checker:
    def __init__(self, meta: MetadataStore, storage: BlobStore) -> None:
        self.meta = meta
        self.storage = storage

    async def run(
        self,
        caller: Caller,
        options: FsckOptions,
        progress: Progress = _no_progress,
        should_stop: Callable[[], str | None] = lambda: None,
    ) -> FsckReport:
        """Check, and with ``options.repair`` delete the leaks older than the grace period.
        ``should_stop`` is asked between phases and batches. FsckBusy: a repair while a
        garbage collection or an import runs. ``caller``: who asked (the command line, or
        the job worker)."""
        if not options.repair:
            return await self._check(options, progress, should_stop)
        async with self.meta.gc_lock() as lock:
            if not lock:
                raise FsckBusy("a garbage collection (or an import) is running; repair when it has finished")
            report = await self._check(options, progress, should_stop)
            report.repair = Repair(datetime.now(UTC) - options.grace)
            if report.stopped is None:
                await self._repair(report, report.repair, options, progress, should_stop, lock)
            return report

    async def _check(
        self, options: FsckOptions, progress: Progress, should_stop: Callable[[], str | None]
    ) -> FsckReport:
        report = FsckReport()
        snapshot = await self.meta.manifests.snapshot()
        rows = snapshot.blobs
        report.blobs_checked, report.manifests_checked = len(rows), len(snapshot.manifests)
        report.importing = (await self.meta.jobs.get_setting(IMPORTING) or {}).get("root")

        # Rows against storage: a stat each, then the suspects again inside their sections.
        digests = sorted(rows)
        progress("blobs", 0, len(digests))
        sizes = await _bounded(digests, self.storage.stat, lambda done: progress("blobs", done, len(digests)))
        suspects = [digest for digest, size in zip(digests, sizes, strict=True) if size != rows[digest]]
        confirmed: dict[str, tuple[int, int | None]] = {}
        for batch in _batches(suspects, max(1, options.batch)):
            if (reason := should_stop()) is not None:
                report.stopped = reason
                return report
            await self.meta.digest_section(batch, partial(self._confirm, batch, confirmed))
        links = await self.meta.blobs.links(confirmed) if confirmed else {}
        graph = _Graph(snapshot.manifests) if confirmed else None
        report.broken = [
            BrokenBlob(
                digest, size, stored, tuple(graph.broken_by(digest)) if graph else (), links.get(digest, ())
            )
            for digest, (size, stored) in sorted(confirmed.items())
        ]

        # References, as of the snapshot (one moment: nothing half pushed or half collected).
        by_repository: dict[str, set[str]] = {}
        for m in snapshot.manifests:
            by_repository.setdefault(m.repository, set()).add(m.digest)
        for m in sorted(snapshot.manifests, key=lambda m: (m.repository, m.digest)):
            for blob in m.blobs:
                if blob not in rows:
                    report.missing.append(MissingReference(m.repository, m.digest, m.tags, "blob", blob))
            for child in m.children:
                if child not in by_repository[m.repository]:
                    report.missing.append(MissingReference(m.repository, m.digest, m.tags, "manifest", child))
        report.dangling_tags = snapshot.dangling_tags

        # Storage against rows: names first, then only the unknown ones looked at.
        if (reason := should_stop()) is not None:
            report.stopped = reason
            return report
        listed: set[str] = set()
        async for digest in self.storage.list():
            listed.add(digest)
            if len(listed) % 10_000 == 0:
                progress("storage", len(listed), 0)
        report.files_listed = len(listed)
        # A file holding a manifest's payload (adopted from a Distribution directory) is kept.
        payloads = {m.digest for m in snapshot.manifests}
        unknown = listed - rows.keys() - payloads
        # Pushed since the snapshot: recorded by now (bytes are stored before their row).
        unknown -= await self.meta.blobs.present(unknown) if unknown else set()
        journal = {digest for digest, _size in await self.meta.gc.pending()}
        ordered = sorted(unknown)
        found = await _bounded(
            ordered, self.storage.describe, lambda done: progress("files", done, len(ordered))
        )
        report.leaks = [
            Leak(f.digest, f.size, f.modified, f.digest in journal) for f in found if f is not None
        ]
        return report

    async def _confirm(self, batch: Sequence[str], confirmed: dict[str, tuple[int, int | None]]) -> None:
        """Inside the batch's sections: a row (still there) whose bytes are missing or of
        another size is a lie, not a push or a collection caught half way."""
        rows = await self.meta.blobs.sizes(batch)
        present = sorted(rows)
        sizes = await _bounded(present, self.storage.stat, lambda _done: None)
        for digest, stored in zip(present, sizes, strict=True):
            if stored != rows[digest]:
                confirmed[digest] = (rows[digest], stored)

    async def _repair(
        self,
        report: FsckReport,
        repair: Repair,
        options: FsckOptions,
        progress: Progress,
        should_stop: Callable[[], str | None],
        lock: HeldLock,
    ) -> None:
        if not report.leaks:
            return
        if report.importing:
            repair.refused = (
                f"an import of {report.importing} has not finished: files no row knows may be blobs it "
                "has yet to adopt, so none is deleted (run the import again to finish it)"
            )
            return
        due = [leak for leak in report.leaks if leak.modified < repair.cutoff]
        repair.young = [leak for leak in report.leaks if leak.modified >= repair.cutoff]

        async def delete(batch: Sequence[Leak]) -> None:
            # A push may have recorded one of them since the check: its row says so now.
            known = await self.meta.blobs.present([leak.digest for leak in batch])
            unknown = [leak for leak in batch if leak.digest not in known]
            failed = await delete_bytes(self.meta, self.storage, [leak.digest for leak in unknown])
            repair.failed.extend(leak for leak in unknown if leak.digest in failed)
            gone = [leak for leak in unknown if leak.digest not in failed]
            repair.deleted.extend(gone)
            # Their collection's journal entries are done with (bytes gone, no row).
            journalled = [leak.digest for leak in gone if leak.journalled]
            if journalled:
                await self.meta.gc.forget_pending(journalled)

        done = 0
        for batch in _batches(due, max(1, options.batch)):
            if await lock.lost():  # a collection may have started since: end before this batch
                raise GCLockLost("the GC lock was lost (its database connection ended)")
            if (reason := should_stop()) is not None:
                repair.stopped = reason
                return
            await self.meta.digest_section([leak.digest for leak in batch], partial(delete, batch))
            done += len(batch)
            progress("repair", done, len(due))


class _Graph:
    """Which manifests name a blob, and which indexes list a manifest."""

    def __init__(self, manifests: Sequence[CheckedManifest]) -> None:
        self.naming: dict[str, list[CheckedManifest]] = {}
        self.parents: dict[tuple[str, str], list[CheckedManifest]] = {}
        for m in sorted(manifests, key=lambda m: (m.repository, m.digest)):
            for blob in m.blobs:
                self.naming.setdefault(blob, []).append(m)
            for child in m.children:
                self.parents.setdefault((m.repository, child), []).append(m)

    def broken_by(self, digest: str) -> Iterator[BrokenImage]:
        """The manifests naming the blob, each followed by the indexes above it."""
        seen: set[tuple[str, str]] = set()
        stack: list[tuple[CheckedManifest, str | None]] = [(m, None) for m in self.naming.get(digest, ())]
        stack.reverse()
        while stack:
            m, through = stack.pop()
            if (m.repository, m.digest) in seen:
                continue
            seen.add((m.repository, m.digest))
            yield BrokenImage(m.repository, m.digest, m.tags, through)
            stack.extend(
                (parent, m.digest) for parent in reversed(self.parents.get((m.repository, m.digest), ()))
            )


# -- the report as lines of text (the CLI prints them, a job logs them) -----------------------


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_age(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def human_duration(span: timedelta) -> str:
    """As the configuration writes durations: 24h, 90m, 1h30m, 0s."""
    seconds = max(0, int(span.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n)
    return text or "0s"


def _named(repository: str, digest: str, tags: Sequence[str]) -> str:
    return f"{repository}@{digest}" + (f" (tags: {', '.join(tags)})" if tags else " (untagged)")


def finding_lines(report: FsckReport, now: datetime) -> Iterator[str]:
    """One line per finding (an indented line per image a broken blob breaks)."""
    for blob in report.broken:
        if blob.stored is None:
            yield f"row without bytes: blob {blob.digest} ({human_bytes(blob.size)}) is missing from storage"
        else:
            yield (
                f"row without its bytes: blob {blob.digest} should hold {blob.size} bytes, "
                f"storage holds {blob.stored}"
            )
        for image in blob.images:
            via = f", an index listing {image.through}" if image.through else ""
            yield f"  breaks {_named(image.repository, image.digest, image.tags)}{via}"
        if blob.repositories:
            yield f"  linked into {', '.join(blob.repositories)}"
        if not blob.images and not blob.repositories:
            yield "  named by no manifest and linked nowhere (the next collection removes the row)"
    for ref in report.missing:
        what = "blob" if ref.kind == "blob" else "child manifest"
        why = "which has no row" if ref.kind == "blob" else "which the repository does not hold"
        named = _named(ref.repository, ref.manifest, ref.tags)
        yield f"missing reference: {named} names {what} {ref.digest}, {why}"
    for repository, tag, digest in report.dangling_tags:
        yield (
            f"missing reference: tag {repository}:{tag} points at manifest {digest}, "
            "which the repository does not hold"
        )
    for leak in report.leaks:
        origin = "a collection's journal has yet to delete it" if leak.journalled else "no row knows it"
        yield (
            f"leak: {leak.digest} ({human_bytes(leak.size)}, {human_age(now - leak.modified)} old) "
            f"is on storage and {origin}"
        )


def summary_lines(report: FsckReport, grace: timedelta) -> Iterator[str]:
    if report.importing:
        yield (
            f"note: an import of {report.importing} has not finished: some leaks may be blobs it has "
            "yet to adopt (run the import again to finish it)"
        )
    yield (
        f"checked {report.blobs_checked} blob rows, {report.manifests_checked} manifests and "
        f"{report.files_listed} files on storage"
    )
    if report.stopped:
        yield f"stopped: {report.stopped}; the check is incomplete"
    leaked = sum(leak.size for leak in report.leaks)
    leaks = f"{len(report.leaks)} leaks (bytes without rows, {human_bytes(leaked)})"
    if report.problems:
        images = len({(i.repository, i.digest) for b in report.broken for i in b.images})
        yield (
            f"{report.problems} problems found: {len(report.broken)} blob rows without their bytes "
            f"(breaking {images} manifests), {len(report.missing) + len(report.dangling_tags)} missing "
            f"references; {leaks}"
        )
    elif report.leaks:
        yield f"no problems found, but {leaks}: `wharf fsck --repair` deletes those past the grace period"
    else:
        yield "no problems found"
    repair = report.repair
    if repair is None:
        return
    if repair.refused:
        yield f"repair: {repair.refused}"
        return
    for leak in repair.deleted:
        yield f"repair: deleted leak {leak.digest} ({human_bytes(leak.size)})"
    if repair.failed:
        yield f"repair: storage would not delete {len(repair.failed)} leaks; the next repair tries again"
    if repair.young:
        kept = len(repair.young)
        yield f"repair: kept {kept} leaks younger than the grace period ({human_duration(grace)})"
    if repair.stopped:
        yield f"repair: stopped: {repair.stopped}"
    yield f"repair: deleted {len(repair.deleted)} leaks, freed {human_bytes(repair.freed)}"
