"""Blob rules: what a repository may read, and dropping a blob from a repository."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..errors import BLOB_UNKNOWN, RegistryError
from ..meta.blobs import BlobRows
from ..meta.events import Event
from ..reference import validate_digest, validate_name
from ..storage.base import BlobStore
from .access import DELETE, PULL, AccessService
from .caller import Caller
from .policy import Policy

# How long a redirect to the object store stays valid (Distribution uses 20 minutes).
REDIRECT_SECONDS = 20 * 60


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int


def blob_unknown(digest: str) -> RegistryError:
    return RegistryError(BLOB_UNKNOWN, {"digest": digest}, f"blob unknown to registry: {digest}")


class BlobService:
    def __init__(self, rows: BlobRows, blobs: BlobStore, policy: Policy, access: AccessService) -> None:
        self.rows = rows
        self.access = access
        self.blobs = blobs
        self.policy = policy

    async def stat(
        self, caller: Caller, repository: str, digest: str, check_storage: bool = True
    ) -> BlobInfo:
        """The blob as the repository sees it: linked there, or unknown. A GET passes
        ``check_storage=False``: opening the bytes (or the redirect) finds them missing.

        A HEAD (``check_storage``) is how a push asks whether to upload: the answer "exists"
        also marks the blob seen, so garbage collection spares it for its grace period
        while the push that was told so goes on (invariant 2)."""
        validate_name(repository)
        validate_digest(digest)
        await self.access.require(caller, PULL, repository)
        if check_storage:
            size = await self.rows.touch(repository, digest)
        else:
            size = await self.rows.readable_size(repository, digest)
        # The bytes are checked too: a HEAD that said "exists" for lost bytes would make
        # clients skip the upload that could repair them.
        if size is None or (check_storage and await self.blobs.stat(digest) is None):
            raise blob_unknown(digest)
        return BlobInfo(digest, size)

    async def redirect_url(self, caller: Caller, digest: str) -> str | None:
        """Where a client may fetch the blob from the object store directly, when allowed."""
        if not self.policy.redirect:
            return None
        return await self.blobs.url(digest, REDIRECT_SECONDS)

    async def open(
        self, caller: Caller, digest: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes of a blob that ``stat`` has just found in the metadata."""
        stream = await self.blobs.open(digest, start, end)
        if stream is None:
            raise blob_unknown(digest)
        return stream

    async def delete(self, caller: Caller, repository: str, digest: str) -> None:
        """Drop the blob's link from the repository; its bytes wait for garbage collection."""
        validate_name(repository)
        validate_digest(digest)
        await self.access.require(caller, DELETE, repository)
        self.policy.check_delete()
        event = Event(caller.name, "blob.delete", repository, digest, digest)
        if not await self.rows.unlink(repository, digest, event):
            raise blob_unknown(digest)
