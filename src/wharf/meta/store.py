"""The metadata store protocol: what services may ask of the database, whatever the backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


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


@dataclass(frozen=True)
class Event:
    actor: str
    action: str
    repository: str | None = None
    reference: str | None = None
    digest: str | None = None
    detail: dict[str, Any] | None = field(default=None)


class MetadataStore(Protocol):
    async def close(self) -> None: ...

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

    # Uploads in progress.
    async def create_upload(self, upload_id: str, repository: str) -> Upload: ...
    async def get_upload(self, upload_id: str) -> Upload | None: ...
    async def set_upload_offset(self, upload_id: str, expected: int, offset: int) -> bool: ...
    async def delete_upload(self, upload_id: str) -> bool: ...

    # Manifests and tags.
    async def put_manifest(
        self, repository: str, manifest: NewManifest, tag: str | None, event: Event
    ) -> None: ...
    async def get_manifest(self, repository: str, reference: str) -> StoredManifest | None: ...
    async def delete_manifest(self, repository: str, digest: str, event: Event) -> list[str] | None: ...
    async def delete_tag(self, repository: str, tag: str, event: Event) -> bool: ...
    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str] | None: ...
    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]: ...
    async def referrers(self, repository: str, digest: str, artifact_type: str | None) -> list[Referrer]: ...

    # The activity log.
    async def events(self, limit: int = 100) -> list[dict[str, Any]]: ...
