"""Adopting a CNCF Distribution data directory: Wharf's metadata built from Distribution's
links, with no blob copied (the blob layout is the same).

Distribution keeps, under ``docker/registry/v2/repositories/<name>/``, ``_layers/<alg>/<hex>/link``
(blobs pushed or mounted into the repository), ``_manifests/revisions/<alg>/<hex>/link``
(manifests) and ``_manifests/tags/<tag>/current/link`` (tags); the manifests' payloads are
blobs. Each repository is imported in one transaction, and importing again adds only what
is missing (rows already there are left as they are): an interrupted import is finished by
running it again.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RegistryError
from ..meta.events import Event
from ..meta.manifests import ImportedBlob, NewManifest
from ..meta.store import MetadataStore
from ..reference import is_valid_digest, validate_name
from ..storage.paths import blob_path
from .caller import Caller
from .gc import IMPORTING
from .manifest_format import new_manifest, parse_manifest

if TYPE_CHECKING:
    from ..meta.engines import HeldLock

REPOSITORIES = Path("docker/registry/v2/repositories")
IMPORT_ACTOR = "import-distribution"


Progress = Callable[[int, int, str], None]  # done, total, repository


def _no_progress(_done: int, _total: int, _name: str) -> None:
    pass


class ImportBusy(Exception):
    """A garbage collection is running: an import waits for it to end."""


class NotADistributionDirectory(Exception):
    pass


def check_distribution_directory(root: Path) -> None:
    """Refuse, naming it, a directory that holds no Distribution data (before anything is
    written: an import must not leave a database in a directory it then refuses)."""
    if not (root / "docker/registry/v2").is_dir():
        raise NotADistributionDirectory(
            f"{root} is not a Distribution data directory (no docker/registry/v2 inside)"
        )


@dataclass
class ImportReport:
    repositories: int = 0
    manifests: int = 0
    tags: int = 0
    blobs: int = 0
    skipped: list[str] = field(default_factory=list)  # what could not be imported, and why
    stopped: str | None = None  # why it ended before the last repository


@dataclass
class _Repository:
    name: str
    blobs: dict[str, ImportedBlob] = field(default_factory=dict)
    manifests: list[NewManifest] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


def _read_link(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    return value if is_valid_digest(value) else None


def _links(directory: Path) -> Iterator[str]:
    """Digests of ``<directory>/<alg>/<hex>/link`` files."""
    if not directory.is_dir():
        return
    for algorithm in sorted(os.scandir(directory), key=lambda e: e.name):
        if not algorithm.is_dir():
            continue
        for entry in sorted(os.scandir(algorithm.path), key=lambda e: e.name):
            digest = _read_link(Path(entry.path) / "link")
            if digest is not None and digest == f"{algorithm.name}:{entry.name}":
                yield digest


class DistributionImporter:
    def __init__(self, meta: MetadataStore, root: Path) -> None:
        self.meta = meta
        self.root = root
        check_distribution_directory(root)

    def repositories(self) -> list[str]:
        """Every repository name: directories holding ``_manifests`` or ``_layers``."""
        base = self.root / REPOSITORIES
        found: list[str] = []
        for directory, subdirectories, _files in os.walk(base):
            if "_manifests" in subdirectories or "_layers" in subdirectories:
                found.append(Path(directory).relative_to(base).as_posix())
            # Distribution's own directories hold no repositories.
            subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("_"))
        return sorted(found)

    def _blob(self, digest: str) -> ImportedBlob | None:
        try:
            info = (self.root / blob_path(digest)).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ImportedBlob(digest, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def _read(self, name: str, report: ImportReport) -> _Repository:
        repository = _Repository(name)
        base = self.root / REPOSITORIES / name
        for digest in _links(base / "_layers"):
            blob = self._blob(digest)
            if blob is None:
                report.skipped.append(f"{name}: layer link {digest} has no data")
                continue
            repository.blobs[digest] = blob
        parsed: dict[str, NewManifest] = {}
        for digest in _links(base / "_manifests" / "revisions"):
            try:
                payload = (self.root / blob_path(digest)).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                report.skipped.append(f"{name}: manifest {digest} has no data")
                continue
            try:
                manifest = parse_manifest(payload, None)
            except RegistryError as error:
                report.skipped.append(f"{name}: manifest {digest}: {error.message}")
                continue
            missing = [d for d in manifest.blobs if d not in repository.blobs]
            for blob_digest in list(missing):
                # Named by the manifest though not linked: readable in Distribution all the same.
                blob = self._blob(blob_digest)
                if blob is not None:
                    repository.blobs[blob_digest] = blob
                    missing.remove(blob_digest)
            if missing:
                report.skipped.append(
                    f"{name}: manifest {digest} names blobs with no data: {', '.join(missing)}"
                )
                continue
            parsed[digest] = new_manifest(digest, payload, manifest)
        # An index only with all its children: drop those that lack one, until none does.
        while True:
            lacking = [m for m in parsed.values() if any(c not in parsed for c in m.children)]
            if not lacking:
                break
            for m in lacking:
                report.skipped.append(
                    f"{name}: index {m.digest} lists manifests that are not in the repository"
                )
                del parsed[m.digest]
        repository.manifests = list(parsed.values())
        tags_directory = base / "_manifests" / "tags"
        if tags_directory.is_dir():
            for entry in sorted(os.scandir(tags_directory), key=lambda e: e.name):
                current = _read_link(Path(entry.path) / "current" / "link")
                if current is None:
                    continue
                if current not in parsed:
                    report.skipped.append(f"{name}: tag {entry.name} points at {current}, not imported")
                    continue
                repository.tags[entry.name] = current
        return repository

    async def run(
        self,
        caller: Caller,
        progress: Callable[[int, int, str], None] = lambda done, total, name: None,
        should_stop: Callable[[], str | None] = lambda: None,
    ) -> ImportReport:
        """Import every repository; ``should_stop`` is asked between repositories (the
        report's ``stopped`` says why it ended early; running again finishes the import).
        The directory is read on a thread: a server's requests go on meanwhile. ``caller``:
        who asked (the command line, or the job worker); the events name the import
        (IMPORT_ACTOR)."""
        async with self.meta.gc_lock() as held:  # no collection sees half an import
            if not held:
                raise ImportBusy("a garbage collection is running; import when it has ended")
            # Holding the GC lock, no deleter can start; one that stopped part way (its process
            # killed, its connection cut) may still be deleting bytes this would adopt.
            left = await self.meta.gc.delete_lease_left()
            if left is not None:
                raise ImportBusy(
                    "a garbage collection that stopped part way may still be deleting blobs; "
                    f"import again in {math.ceil(left)} s"
                )
            await self.meta.jobs.put_setting(IMPORTING, {"root": str(self.root)})
            report = await self._import(progress, should_stop, held)
            if report.stopped is None:
                await self.meta.jobs.put_setting(IMPORTING, {})
            return report

    async def _import(
        self,
        progress: Callable[[int, int, str], None],
        should_stop: Callable[[], str | None],
        lock: HeldLock,
    ) -> ImportReport:
        report = ImportReport()
        names = await asyncio.to_thread(self.repositories)
        for number, name in enumerate(names):
            if await lock.lost():  # a collection may be running now: it must not see half an import
                raise ImportBusy("the GC lock was lost (its database connection ended); import again")
            report.stopped = should_stop()
            if report.stopped is not None:
                return report
            progress(number, len(names), name)
            try:
                validate_name(name)
            except RegistryError as error:
                report.skipped.append(f"{name}: {error.message}")
                continue
            repository = await asyncio.to_thread(self._read, name, report)
            event = Event(IMPORT_ACTOR, "repository.import", name, detail={"source": str(self.root)})
            added = await self.meta.manifests.import_repository(
                name, list(repository.blobs.values()), repository.manifests, repository.tags, event
            )
            report.repositories += 1
            report.blobs += added["blobs"]
            report.manifests += added["manifests"]
            report.tags += added["tags"]
        progress(len(names), len(names), "")
        return report
