"""Repositories, their manifests and tags: the protocol, whatever the backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .events import Event


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
class TagInfo:
    """A tag as the admin API lists it: the manifest it names, and when it last moved."""

    name: str
    digest: str
    media_type: str
    size: int
    updated_at: datetime


@dataclass(frozen=True)
class ManifestInfo:
    """A manifest as the admin API lists it, with the tags naming it (by name)."""

    digest: str
    media_type: str
    size: int
    created_at: datetime
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ImportedBlob:
    digest: str
    size: int
    modified: datetime  # when it was last written: its grace period counts from here


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


class ManifestRows(Protocol):
    async def put(self, repository: str, manifest: NewManifest, tag: str | None, event: Event) -> None:
        """Record the manifest (and point ``tag`` at it); MissingReference when it names a
        blob the repository may not read or a child manifest it does not hold."""

    async def get(self, repository: str, reference: str) -> StoredManifest | None:
        """By digest (``sha256:...``) or by tag."""

    async def delete(self, repository: str, digest: str, event: Event) -> list[str] | None:
        """The manifest leaves the repository with every tag naming it: those tags, or None
        when the repository did not hold it."""

    async def delete_tag(self, repository: str, tag: str, event: Event) -> bool: ...
    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str] | None: ...
    async def tag_details(self, repository: str, start: int, limit: int) -> list[TagInfo] | None:
        """The repository's tags by name in byte order, from ``start``; None when there is no
        such repository."""

    async def manifest_details(self, repository: str, start: int, limit: int) -> list[ManifestInfo] | None:
        """The repository's manifests, oldest first, from ``start``; None when there is no
        such repository."""

    async def referrers(self, repository: str, digest: str, artifact_type: str | None) -> list[Referrer]: ...
    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        """The names of the repositories holding at least one manifest, in byte order."""

    async def delete_repository(self, repository: str, event: Event) -> bool:
        """The repository leaves with its manifests, tags and links; its blobs wait for GC."""

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

    async def snapshot(self) -> RegistrySnapshot:
        """Every blob row and manifest reference in one consistent read (one snapshot of the
        database, however many statements it takes): what ``wharf fsck`` checks."""
