"""Blobs, their links to repositories and uploads in progress: the protocol, whatever the backend."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .events import Event


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


class BlobRows(Protocol):
    # A blob is readable in a repository when linked there (pushed or mounted) or named by
    # one of its manifests: the rule every method here that says "readable" follows.
    async def readable_size(self, repository: str, digest: str) -> int | None:
        """The blob's size when the repository may read it."""

    async def link(
        self,
        repository: str,
        digest: str,
        size: int,
        event: Event | None = None,
        finished_upload: str | None = None,
    ) -> None:
        """Record the blob and link it into the repository; also drops ``finished_upload``'s row."""

    async def unlink(self, repository: str, digest: str, event: Event) -> bool: ...

    async def touch(self, repository: str, digest: str) -> int | None:
        """``readable_size``, also recording that a client saw the blob now (a HEAD in a
        push): garbage collection spares it for its grace period."""

    async def mount(self, repository: str, source: str, digest: str, event: Event) -> int | None:
        """Link a blob that ``source`` may read into ``repository``; its size, or None when
        ``source`` cannot read it (then nothing changes)."""

    async def count(self) -> int:
        """How many blob rows there are."""

    async def present(self, digests: Collection[str]) -> set[str]:
        """Those digests that have a blob row."""

    async def last_seen(self, digests: Collection[str]) -> datetime | None:
        """The latest time any of these blobs was seen (pushed, mounted, found by a HEAD)."""

    async def sizes(self, digests: Collection[str]) -> dict[str, int]:
        """The sizes of those of these blobs that have a row."""

    async def links(self, digests: Collection[str]) -> dict[str, tuple[str, ...]]:
        """The repositories each of these blobs is linked into (pushed or mounted there)."""

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
