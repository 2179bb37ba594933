"""Blob uploads: sessions, chunks, cross-repository mounts, and verified completion.

The hash is computed as bytes arrive. hashlib's state cannot be saved, so a process keeps
the hasher of each upload it is serving; when a request for an upload reaches a process
without it (after a restart, or on another worker), the hasher is rebuilt by reading back
the bytes already written. Memory per upload is one hasher and one chunk in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import (
    BLOB_UPLOAD_INVALID,
    BLOB_UPLOAD_UNKNOWN,
    BODY_TOO_BIG,
    DIGEST_INVALID,
    RANGE_INVALID,
    TOOMANYREQUESTS,
    RegistryError,
)
from ..meta.blobs import TooManyUploads, Upload
from ..meta.events import Event
from ..meta.store import MetadataStore
from ..reference import validate_digest, validate_name
from ..storage.base import BlobStore, BodyTooLarge, LengthMismatch, OffsetMismatch, UploadBusy, UploadMissing
from .access import PULL, PUSH, AccessService
from .caller import Caller
from .deleting import wait_out_deletes
from .policy import Policy

STREAM_ALGORITHM = "sha256"
MAX_CACHED_HASHERS = 4096


@dataclass(frozen=True)
class UploadStatus:
    id: str
    repository: str
    offset: int


def _busy(upload_id: str) -> RegistryError:
    return RegistryError(
        RANGE_INVALID, {"upload": upload_id}, "another request is writing this upload; retry when it is done"
    )


def _too_large(exc: BodyTooLarge) -> RegistryError:
    return RegistryError(BODY_TOO_BIG, {"limit": exc.limit}, str(exc))


def upload_unknown(upload_id: str) -> RegistryError:
    return RegistryError(BLOB_UPLOAD_UNKNOWN, {"upload": upload_id}, f"blob upload unknown: {upload_id}")


class _Hashers:
    """The hash state of uploads this process is serving, keyed by upload and offset.

    When full, the state of an upload holding no bytes yet goes first (rebuilding it reads
    nothing), least recently used first; only then that of one with bytes (rebuilding it
    reads them all back). So sessions opened in their thousands, and never written to,
    cannot push a running 512 MiB upload's state out.
    """

    def __init__(self) -> None:
        self._empty: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._written: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        # A lock lives as long as a request holds it or waits for it, and no longer.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, upload_id: str) -> asyncio.Lock:
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = self._locks[upload_id] = asyncio.Lock()
        return lock

    def busy(self, upload_id: str) -> bool:
        lock = self._locks.get(upload_id)
        return lock is not None and lock.locked()

    def take(self, upload_id: str, offset: int) -> Any | None:
        state = self._empty.pop(upload_id, None) or self._written.pop(upload_id, None)
        if state is None or state[0] != offset:
            return None
        return state[1]

    def keep(self, upload_id: str, offset: int, hasher: Any) -> None:
        self.forget(upload_id)
        (self._written if offset else self._empty)[upload_id] = (offset, hasher)
        while len(self._empty) + len(self._written) > MAX_CACHED_HASHERS:
            (self._empty or self._written).popitem(last=False)

    def forget(self, upload_id: str) -> None:
        self._empty.pop(upload_id, None)
        self._written.pop(upload_id, None)

    def __contains__(self, upload_id: str) -> bool:
        return upload_id in self._empty or upload_id in self._written


class UploadService:
    def __init__(self, meta: MetadataStore, blobs: BlobStore, policy: Policy, access: AccessService) -> None:
        self.meta = meta
        self.access = access
        self.blobs = blobs
        self.policy = policy
        self._hashers = _Hashers()

    # -- sessions ---------------------------------------------------------------------------

    async def start(self, caller: Caller, repository: str) -> UploadStatus:
        validate_name(repository)
        await self.access.require(caller, PUSH, repository)
        self.policy.check_writable()
        upload_id = str(uuid.uuid4())
        await self.blobs.create_upload(upload_id)
        try:
            await self.meta.blobs.create_upload(upload_id, repository, self.policy.max_open_uploads)
        except TooManyUploads as exc:
            await self.blobs.delete_upload(upload_id)
            raise RegistryError(
                TOOMANYREQUESTS,
                {"repository": repository, "open": exc.open, "limit": self.policy.max_open_uploads},
                f"repository {repository} has {exc.open} uploads open, the most it may "
                "(uploads.maxopen): finish or cancel some first",
            ) from None
        except BaseException:
            await self.blobs.delete_upload(upload_id)
            raise
        self._hashers.keep(upload_id, 0, hashlib.new(STREAM_ALGORITHM))
        return UploadStatus(upload_id, repository, 0)

    async def _get(self, repository: str, upload_id: str) -> Upload:
        validate_name(repository)
        try:
            uuid.UUID(upload_id)
        except ValueError:
            raise upload_unknown(upload_id) from None
        upload = await self.meta.blobs.get_upload(upload_id)
        if upload is None or upload.repository != repository:
            raise upload_unknown(upload_id)
        return upload

    @asynccontextmanager
    async def _claim(self, repository: str, upload_id: str) -> AsyncIterator[Upload]:
        """The upload, held by this request alone within the process (storage guards across
        processes); a second request answers at once instead of queueing behind a slow body."""
        upload = await self._get(repository, upload_id)
        lock = self._hashers.lock(upload.id)
        if lock.locked():
            raise _busy(upload.id)
        async with lock:
            yield await self._get(repository, upload_id)

    async def status(self, caller: Caller, repository: str, upload_id: str) -> UploadStatus:
        validate_name(repository)
        await self.access.require(caller, PUSH, repository)
        upload = await self._get(repository, upload_id)
        return UploadStatus(upload.id, repository, upload.offset)

    async def cancel(self, caller: Caller, repository: str, upload_id: str) -> None:
        validate_name(repository)
        await self.access.require(caller, PUSH, repository)
        self.policy.check_writable()
        upload = await self._get(repository, upload_id)
        # No claim taken: a request still writing finds the row gone and fails cleanly.
        await self._discard(upload.id)

    async def _discard(self, upload_id: str) -> None:
        self._hashers.forget(upload_id)
        await self.meta.blobs.delete_upload(upload_id)
        await self.blobs.delete_upload(upload_id)

    def in_use(self, upload_id: str) -> bool:
        """Whether a request of this process is writing or completing the upload now."""
        return self._hashers.busy(upload_id)

    async def purge(self, upload_id: str, before: datetime) -> bool:
        """Delete an abandoned upload: its row, only if no request wrote to it since
        ``before``, then its staged bytes. Skipped (False) while a request of this process
        holds the upload; a request in another process finds the row gone and answers
        BLOB_UPLOAD_UNKNOWN, and cleans up what it was writing (see _write)."""
        lock = self._hashers.lock(upload_id)
        if lock.locked():
            return False
        async with lock:
            if not await self.meta.blobs.purge_upload(upload_id, before):
                return False
            self._hashers.forget(upload_id)
            await self.blobs.delete_upload(upload_id)
        return True

    async def purge_staged(self, upload_id: str) -> bool:
        """Delete staged bytes that no upload row knows (a crash between deleting the row and
        the bytes, or a whole-blob push cut short); False when a row or a request has it."""
        lock = self._hashers.lock(upload_id)
        if lock.locked():
            return False
        async with lock:
            if await self.meta.blobs.get_upload(upload_id) is not None:
                return False
            self._hashers.forget(upload_id)
            await self.blobs.delete_upload(upload_id)
        return True

    # -- data -------------------------------------------------------------------------------

    async def _hasher_at(self, upload_id: str, offset: int, algorithm: str = STREAM_ALGORITHM) -> Any:
        """The hash state after the first ``offset`` bytes: kept in memory, or rebuilt from storage."""
        if algorithm == STREAM_ALGORITHM:
            hasher = self._hashers.take(upload_id, offset)
            if hasher is not None:
                return hasher
        hasher = hashlib.new(algorithm)
        seen = 0
        try:
            async for chunk in self.blobs.read_upload(upload_id):
                hasher.update(chunk)
                seen += len(chunk)
        except UploadMissing:
            raise upload_unknown(upload_id) from None
        except UploadBusy:
            raise _busy(upload_id) from None
        if seen > offset:
            raise await self._catch_up(upload_id, offset, seen)
        if seen != offset:
            raise RegistryError(
                BLOB_UPLOAD_INVALID,
                {"upload": upload_id},
                f"upload data holds {seen} bytes but {offset} were acknowledged; start the upload again",
            )
        return hasher

    async def _catch_up(self, upload_id: str, offset: int, stored: int) -> RegistryError:
        """Storage holds bytes past the row: a request stored them whole, and its answer or
        row update was lost (a crash, a retried write). They are the client's bytes, so the
        row moves to them, and the client is told where to resume."""
        self._hashers.forget(upload_id)
        await self.meta.blobs.set_upload_offset(upload_id, offset, stored)
        return RegistryError(
            RANGE_INVALID,
            {"offset": stored},
            f"the upload holds {stored} bytes, more than acknowledged; resume from byte {stored}",
        )

    async def _write(
        self, upload: Upload, chunks: AsyncIterable[bytes], start: int | None, length: int | None
    ) -> int:
        """Append a request body at the upload's offset; returns the new offset."""
        if start is not None and start != upload.offset:
            raise RegistryError(
                RANGE_INVALID,
                {"offset": upload.offset, "start": start},
                f"chunk starts at {start} but the upload holds {upload.offset} bytes",
            )
        hasher = await self._hasher_at(upload.id, upload.offset)
        try:
            new_offset = await self.blobs.append_upload(
                upload.id, upload.offset, chunks, hasher.update, length
            )
        except UploadMissing:
            raise upload_unknown(upload.id) from None
        except UploadBusy:
            raise _busy(upload.id) from None
        except BodyTooLarge as exc:
            raise _too_large(exc) from None
        except OffsetMismatch as exc:
            if exc.actual > exc.expected:
                raise await self._catch_up(upload.id, exc.expected, exc.actual) from None
            self._hashers.forget(upload.id)
            raise RegistryError(RANGE_INVALID, {"offset": upload.offset}, str(exc)) from None
        except LengthMismatch as exc:
            self._hashers.forget(upload.id)
            raise RegistryError(RANGE_INVALID, {"offset": upload.offset}, str(exc)) from None
        if new_offset != upload.offset and not await self.meta.blobs.set_upload_offset(
            upload.id, upload.offset, new_offset
        ):
            current = await self.meta.blobs.get_upload(upload.id)
            if current is None:
                # Cancelled or completed meanwhile: what this request stored goes too.
                await self.blobs.delete_upload(upload.id)
                raise upload_unknown(upload.id)
            if current.offset != new_offset:
                self._hashers.forget(upload.id)
                raise RegistryError(
                    RANGE_INVALID, {"offset": current.offset}, "upload was written concurrently"
                )
            # Another request caught the row up to these very bytes (see _catch_up).
        self._hashers.keep(upload.id, new_offset, hasher)
        return new_offset

    async def append(
        self,
        caller: Caller,
        repository: str,
        upload_id: str,
        chunks: AsyncIterable[bytes],
        start: int | None = None,
        length: int | None = None,
    ) -> UploadStatus:
        validate_name(repository)
        await self.access.require(caller, PUSH, repository)
        self.policy.check_writable()
        async with self._claim(repository, upload_id) as upload:
            offset = await self._write(upload, chunks, start, length)
        return UploadStatus(upload.id, repository, offset)

    async def finish(
        self,
        caller: Caller,
        repository: str,
        upload_id: str,
        digest: str,
        chunks: AsyncIterable[bytes],
    ) -> str:
        """Append the last bytes (if any), verify the digest, and make the blob visible."""
        validate_name(repository)
        await self.access.require(caller, PUSH, repository)
        self.policy.check_writable()
        validate_digest(digest)
        async with self._claim(repository, upload_id) as upload:
            if upload.offset == 0:
                # Nothing written yet: the whole blob is in this request, and its digest is
                # known, so it goes straight to where blobs live (no copy on S3).
                await self._store_whole(repository, digest, chunks, caller.name, finished_upload=upload.id)
                # The row went with the blob's link; only the session's empty storage is left.
                self._hashers.forget(upload.id)
                await self.blobs.delete_upload(upload.id)
                return digest
            size = await self._write(upload, chunks, None, None)
            hasher = await self._hasher_at(upload.id, size, digest.split(":", 1)[0])
            await self._commit(repository, upload.id, digest, size, hasher, caller.name, session=True)
        return digest

    async def _commit(
        self, repository: str, upload_id: str, digest: str, size: int, hasher: Any, actor: str, session: bool
    ) -> None:
        """Verify the upload's digest, then make its bytes the blob and record it."""
        actual = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
        if actual != digest:
            if session:
                await self._discard(upload_id)
            raise RegistryError(
                DIGEST_INVALID,
                {"digest": digest, "actual": actual},
                f"provided digest {digest} does not match uploaded content ({actual}); upload discarded",
            )
        # Bytes first, then the row: a crash in between leaves a file no row knows
        # (collected later), never a row without its bytes. Both inside the digest's
        # critical section, so a collection of this digest runs wholly before or after.
        event = Event(actor, "blob.push", repository, digest, digest, {"size": size})

        async def publish_and_record() -> None:
            await wait_out_deletes(self.meta.gc, digest)
            try:
                await self.blobs.commit_upload(upload_id, digest, size)
            except UploadMissing:
                raise upload_unknown(upload_id) from None
            except UploadBusy:
                raise _busy(upload_id) from None
            except OffsetMismatch as exc:
                raise RegistryError(
                    RANGE_INVALID, {"upload": upload_id}, f"upload changed while completing: {exc}"
                ) from None
            await self.meta.blobs.link(
                repository, digest, size, event, finished_upload=upload_id if session else None
            )

        await self.meta.digest_section([digest], publish_and_record)
        self._hashers.forget(upload_id)

    async def monolithic(
        self, caller: Caller, repository: str, digest: str, chunks: AsyncIterable[bytes]
    ) -> str:
        """A whole blob in one request: no session row, since no client can address it."""
        validate_name(repository)
        validate_digest(digest)
        await self.access.require(caller, PUSH, repository)
        self.policy.check_writable()
        await self._store_whole(repository, digest, chunks, caller.name)
        return digest

    async def _store_whole(
        self,
        repository: str,
        digest: str,
        chunks: AsyncIterable[bytes],
        actor: str,
        finished_upload: str | None = None,
    ) -> None:
        algorithm = digest.split(":", 1)[0]
        hasher = hashlib.new(algorithm)

        async def accept(size: int, publish: Callable[[], Awaitable[None]]) -> None:
            if f"{algorithm}:{hasher.hexdigest()}" != digest:
                return

            async def publish_and_record() -> None:
                await wait_out_deletes(self.meta.gc, digest)
                await publish()  # the bytes are in place before the row names them (see _commit)
                event = Event(actor, "blob.push", repository, digest, digest, {"size": size})
                await self.meta.blobs.link(repository, digest, size, event, finished_upload=finished_upload)

            await self.meta.digest_section([digest], publish_and_record)

        try:
            size = await self.blobs.store_blob(digest, chunks, hasher.update, accept)
        except BodyTooLarge as exc:
            raise _too_large(exc) from None
        if size is not None:
            return
        if finished_upload is not None:
            await self._discard(finished_upload)
        actual = f"{algorithm}:{hasher.hexdigest()}"
        raise RegistryError(
            DIGEST_INVALID,
            {"digest": digest, "actual": actual},
            f"provided digest {digest} does not match uploaded content ({actual}); nothing stored",
        )

    async def mount(self, caller: Caller, repository: str, digest: str, source: str) -> bool:
        """Link a blob that ``source`` holds into ``repository``; False when it cannot
        (the caller may not pull from ``source`` included: the client then uploads, and
        learns nothing of what ``source`` holds)."""
        validate_name(repository)
        validate_name(source)
        validate_digest(digest)
        await self.access.require(caller, PUSH, repository)
        if not await self.access.allows(caller, PULL, source):
            return False
        self.policy.check_writable()
        if await self.blobs.stat(digest) is None:
            return False
        # One transaction checks the source and links: a collection of the blob either
        # came first (then there is nothing to mount) or sees the new link.
        event = Event(caller.name, "blob.mount", repository, digest, digest, {"from": source})
        return await self.meta.blobs.mount(repository, source, digest, event) is not None
