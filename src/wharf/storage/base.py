"""The blob store protocol, shared by every backend."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Protocol


class UploadMissing(Exception):
    """The upload's data is gone from storage (cancelled, purged, or never started here)."""


class OffsetMismatch(Exception):
    """Data was written for an upload at an offset other than where its data ends."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"upload holds {actual} bytes, write asked to start at {expected}")


class BlobStore(Protocol):
    """Content-addressed blobs plus the temporary uploads that become them.

    A blob is visible only once complete and verified: uploads are written apart and
    moved into place by ``commit_upload`` after the caller has checked the digest.
    """

    async def stat(self, digest: str) -> int | None:
        """The blob's size, or None when it is not stored."""

    def read(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The blob's bytes from ``start`` up to (not including) ``end``."""

    async def delete(self, digest: str) -> bool: ...

    def list(self) -> AsyncIterator[str]:
        """Every stored blob digest."""

    async def create_upload(self, upload_id: str) -> None: ...

    async def upload_size(self, upload_id: str) -> int:
        """Bytes written so far; raises UploadMissing."""

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterable[bytes],
        observe: Callable[[bytes], object] | None = None,
    ) -> int:
        """Write ``chunks`` at ``offset`` (which must be the current end); returns the new size.

        ``observe`` sees every chunk, in order, as it is written (the caller hashes with it);
        it may run on another thread. A body that fails half way leaves the upload at ``offset``.
        """

    async def truncate_upload(self, upload_id: str, size: int) -> None:
        """Cut the upload back to ``size`` bytes, dropping what a failed request appended."""

    def read_upload(self, upload_id: str) -> AsyncIterator[bytes]:
        """The bytes written so far, to rebuild a hash state lost with a process."""

    async def commit_upload(self, upload_id: str, digest: str) -> None:
        """Make the upload's bytes the blob ``digest`` (already verified by the caller)."""

    async def delete_upload(self, upload_id: str) -> None: ...
