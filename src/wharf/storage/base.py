"""The blob store protocol, shared by every backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class StoredBlob:
    """A blob as storage lists it: what garbage collection compares with the metadata."""

    digest: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class StagedUpload:
    """An upload's data as storage lists it: what upload purging compares with the rows."""

    id: str
    size: int  # bytes staged
    modified: datetime  # the last write


@dataclass(frozen=True)
class PendingMultipart:
    """A multipart upload the object store still holds parts of (never completed or aborted)."""

    key: str
    multipart_id: str
    upload_id: str | None  # the Wharf upload whose prefix it lies under, if any
    initiated: datetime
    last_activity: datetime  # its newest part, or its start when it has none
    size: int  # bytes held in its parts


class UploadMissing(Exception):
    """The upload's data is gone from storage (cancelled, purged, or never started here)."""


class OffsetMismatch(Exception):
    """Data was written for an upload at an offset other than where its data ends."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"upload holds {actual} bytes, write asked to start at {expected}")


class UploadBusy(Exception):
    """Another request (in this process or another) is writing or completing the upload."""


class LengthMismatch(Exception):
    """A request body's length differed from what it declared; nothing of it was kept."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"chunk declared {expected} bytes but {actual} arrived")


class BodyTooLarge(Exception):
    """One request carried more than the backend can store as one piece."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"a request body over {limit} bytes cannot be stored at once; send it in chunks")


# accept(size, publish): called once the whole body is in; publish() makes it the blob.
Accept = Callable[[int, Callable[[], Awaitable[None]]], Awaitable[None]]


class BlobStore(Protocol):
    """Content-addressed blobs plus the temporary uploads that become them.

    A blob is visible only once complete and verified: uploads are written apart and
    moved into place by ``commit_upload`` after the caller has checked the digest.
    """

    async def stat(self, digest: str) -> int | None:
        """The blob's size, or None when it is not stored."""

    async def open(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes] | None:
        """The blob's bytes from ``start`` up to (not including) ``end``, or None when it is
        not stored: found missing before the first byte is promised to anyone."""

    async def url(self, digest: str, expires: int) -> str | None:
        """A URL the client may GET the blob from directly for ``expires`` seconds, or None."""

    async def delete(self, digest: str) -> bool: ...

    async def delete_many(self, digests: Sequence[str]) -> set[str]:
        """Delete these blobs, in as few round trips as the backend allows, and answer the
        digests it could NOT delete (their bytes may still be stored: the caller keeps
        them for another try). A blob already gone counts as deleted; a failure of one
        blob is that blob's, not the batch's.

        Every piece of storage work it started has ended when it returns or raises, even
        when it is cancelled: the caller's critical section for these digests ends right
        after, and a deletion still running then could remove a blob pushed again."""

    def delete_lease(self, count: int) -> float:
        """Seconds from the start of a ``delete_many`` of ``count`` blobs after which none
        of its storage work can act any more, even if its process is killed at the start:
        the lease a deleter takes (a request the store may carry out late counts)."""

    @property
    def delete_tail(self) -> float:
        """Seconds after its process stops that a deletion's last request may still act."""

    def list(self) -> AsyncIterator[str]:
        """Every stored blob's digest, in no particular order (names only: cheap)."""

    def local_directories(self) -> Sequence[Path]:
        """The directories on this machine that writes go through (the root of a filesystem
        store, the spool directory of an object store): /readyz checks they have room."""

    async def describe(self, digest: str) -> StoredBlob | None:
        """The stored blob's size and modification time, or None when it is not stored."""

    async def store_blob(
        self,
        digest: str,
        chunks: AsyncIterable[bytes],
        observe: Callable[[bytes], object],
        accept: Accept,
    ) -> int | None:
        """Receive a whole blob whose digest is known before its first byte.

        ``observe`` sees every chunk in order; after the last one ``accept(size, publish)``
        decides: it calls ``publish()`` (inside the digest's critical section, with the
        row written after it) to make the blob visible, complete and at once, and the
        answer is its size; if it does not, nothing is left behind and the answer is None.
        """

    async def create_upload(self, upload_id: str) -> None: ...

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterable[bytes],
        observe: Callable[[bytes], object] | None = None,
        length: int | None = None,
    ) -> int:
        """Write ``chunks`` at ``offset`` (which must be the current end); returns the new size.

        Holds the upload exclusively while it writes (UploadBusy when another request does).
        ``observe`` sees every chunk, in order, as it is written (the caller hashes with it);
        it may run on another thread. A body that fails half way, or whose size is not
        ``length`` (LengthMismatch), leaves the upload at ``offset``.
        """

    def read_upload(self, upload_id: str) -> AsyncIterator[bytes]:
        """The bytes written so far, to rebuild a hash state lost with a process."""

    async def commit_upload(self, upload_id: str, digest: str, size: int) -> None:
        """Make the upload's bytes the blob ``digest``, verified by the caller over ``size`` bytes.

        Holds the upload exclusively, and refuses (OffsetMismatch) if it no longer holds
        exactly ``size`` bytes: nothing written after the verification can reach the blob.
        """

    async def delete_upload(self, upload_id: str) -> None: ...

    def list_uploads(self) -> AsyncIterator[StagedUpload]:
        """The data of every upload staged on storage (also those no row knows any more)."""

    async def stale_multipart(self, before: datetime) -> Sequence[PendingMultipart]:
        """Multipart uploads under Wharf's prefixes started and last written to before
        ``before``: parts an interrupted process left behind (none on a filesystem)."""

    async def abort_multipart(self, pending: PendingMultipart) -> None:
        """Free a multipart upload's parts (one already gone is no error)."""


# A directory writes go through with less room than this cannot take a push: not ready.
MIN_FREE_BYTES = 1 << 20


def room_problems(directories: Sequence[Path]) -> list[str]:
    """What keeps these directories from taking writes: missing, not writable, or full."""
    problems = []
    for directory in directories:
        try:
            found = os.statvfs(directory)
        except OSError as error:
            problems.append(f"{directory}: {error.strerror}")
            continue
        if not os.access(directory, os.W_OK | os.X_OK):
            problems.append(f"{directory}: not writable")
        free = found.f_bavail * found.f_frsize
        if free < MIN_FREE_BYTES:
            problems.append(f"{directory}: full ({free} bytes free)")
    return problems
