"""The filesystem blob store: Distribution's layout on a local directory."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from .base import (
    Accept,
    LengthMismatch,
    OffsetMismatch,
    PendingMultipart,
    StagedUpload,
    StoredBlob,
    UploadBusy,
    UploadMissing,
)
from .paths import BLOBS, UPLOADS, blob_path, upload_path
from .streams import pipeline, result, settle, submit

# Reads of 2 MiB: measured faster than 64 KiB (a thread hand-off each) and than 8 MiB (cache misses).
READ_CHUNK = 2 << 20
# An upload's bytes are flushed to disk in the background every this many bytes, and after
# each request that wrote to it.
FLUSH_EVERY = 32 << 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(handle: BinaryIO, chunk: bytes) -> None:
    """Write all of ``chunk`` or raise: a write to a nearly full disk may write part of it
    and say so only in its count (the next try then fails with ENOSPC). Ignoring that count
    would store a blob shorter than the bytes its digest was checked over."""
    view = memoryview(chunk)
    while view:
        written = handle.write(view)
        if not written:
            raise OSError(errno.ENOSPC, "no byte of the write was stored", handle.name)
        view = view[written:]


def _claim(handle: BinaryIO, path: Path, upload_id: str, shared: bool = False) -> None:
    """Hold the upload file exclusively (or, to read it, shared), across processes, and make
    sure it is still the upload (not a file renamed into a blob since we opened it)."""
    try:
        fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UploadBusy(upload_id) from None
    try:
        current = os.stat(path)
    except FileNotFoundError:
        raise UploadMissing(upload_id) from None
    if current.st_ino != os.fstat(handle.fileno()).st_ino:
        raise UploadMissing(upload_id)


def _list_prefixes(base: Path) -> list[tuple[str, str]]:
    try:
        algorithms = [entry for entry in os.scandir(base) if entry.is_dir()]
    except FileNotFoundError:
        return []
    return [
        (algorithm.name, prefix.path)
        for algorithm in algorithms
        for prefix in os.scandir(algorithm.path)
        if prefix.is_dir()
    ]


def _list_digests(prefixes: list[tuple[str, str]]) -> list[str]:
    # Names only: a blob directory holds its data (a crash can leave one empty, which
    # describe() then reports as not stored).
    return [f"{algorithm}:{entry.name}" for algorithm, path in prefixes for entry in os.scandir(path)]


def _list_uploads(base: Path) -> list[StagedUpload]:
    staged: list[StagedUpload] = []
    try:
        entries = [entry for entry in os.scandir(base) if entry.is_dir()]
    except FileNotFoundError:
        return staged
    for entry in entries:
        try:
            info = os.stat(Path(entry.path) / "data")
        except FileNotFoundError:
            # A directory without data: created and never written, or half deleted.
            try:
                info = entry.stat()
            except FileNotFoundError:
                continue  # gone meanwhile
            staged.append(StagedUpload(entry.name, 0, datetime.fromtimestamp(info.st_mtime, UTC)))
            continue
        staged.append(StagedUpload(entry.name, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC)))
    return staged


DELETE_THREADS = 4
log = logging.getLogger(__name__)


class FilesystemBlobStore:
    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self._flusher = ThreadPoolExecutor(2, thread_name_prefix="wharf-flush")
        self._flush_pending: set[Path] = set()
        (self.root / BLOBS).mkdir(parents=True, exist_ok=True)
        (self.root / UPLOADS).mkdir(parents=True, exist_ok=True)

    def local_directories(self) -> Sequence[Path]:
        return [self.root]

    def _blob(self, digest: str) -> Path:
        return self.root / blob_path(digest)

    def _upload(self, upload_id: str) -> Path:
        return self.root / upload_path(upload_id)

    async def stat(self, digest: str) -> int | None:
        try:
            return self._blob(digest).stat().st_size
        except FileNotFoundError:
            return None

    async def open(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes] | None:
        try:
            handle = self._blob(digest).open("rb")
        except FileNotFoundError:
            return None
        return self._stream(handle, start, end)

    async def _read_file(
        self, path: Path, start: int, end: int | None, upload_id: str | None = None
    ) -> AsyncIterator[bytes]:
        handle = path.open("rb")
        if upload_id is not None:
            try:
                _claim(handle, path, upload_id, shared=True)
            except BaseException:
                handle.close()
                raise
        async for chunk in self._stream(handle, start, end):
            yield chunk

    async def _stream(self, handle: BinaryIO, start: int, end: int | None) -> AsyncIterator[bytes]:
        limit = None if end is None else end - start
        sent = 0

        def read_block() -> bytes:
            size = READ_CHUNK if limit is None else min(READ_CHUNK, limit - sent)
            return os.pread(handle.fileno(), size, start + sent) if size > 0 else b""

        reading = None
        try:
            while True:
                reading = submit(read_block)
                chunk = await result(reading)
                if not chunk:
                    break
                sent += len(chunk)
                yield chunk
        finally:
            try:
                if reading is not None:
                    await settle(reading)  # before the descriptor closes under the reading thread
            finally:
                handle.close()

    async def url(self, digest: str, expires: int) -> str | None:
        return None  # the files are only reachable through this server

    async def delete(self, digest: str) -> bool:
        return self._remove(digest)

    def _remove(self, digest: str) -> bool:
        # Strings, not Paths, and the blob's own directory only (the two-character prefix
        # directories above are shared and seldom empty): GC calls this for every blob.
        directory = os.path.dirname(os.fspath(self._blob(digest)))
        try:
            os.unlink(directory + "/data")
        except FileNotFoundError:
            # Gone already, but a delete killed between the unlink and the rmdir leaves the
            # empty directory, which list() still names: deleting again finishes that one.
            with contextlib.suppress(OSError):
                os.rmdir(directory)
            return False
        with contextlib.suppress(OSError):
            os.rmdir(directory)
        return True

    async def list(self) -> AsyncIterator[str]:
        prefixes = await asyncio.to_thread(_list_prefixes, self.root / BLOBS)
        for start in range(0, len(prefixes), 64):
            for digest in await asyncio.to_thread(_list_digests, prefixes[start : start + 64]):
                yield digest

    async def describe(self, digest: str) -> StoredBlob | None:
        try:
            info = self._blob(digest).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return StoredBlob(digest, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def delete_lease(self, count: int) -> float:
        # The unlinks run on this process's threads and end with it; this bounds a disk
        # that stalls while the process lives on without its database connection.
        return 60.0 + count * 0.1

    @property
    def delete_tail(self) -> float:
        return 10.0  # unlinks end with their process; a margin for one under way

    async def delete_many(self, digests: Sequence[str]) -> set[str]:
        # A few threads at once: on a disk each unlink and rmdir waits for the filesystem.
        share = max(64, -(-len(digests) // DELETE_THREADS))
        parts = [tuple(digests[start : start + share]) for start in range(0, len(digests), share)]
        running = [submit(self._delete_all, part) for part in parts]
        failed: set[str] = set()
        try:
            for part in running:
                part_failed: set[str] = await result(part)
                failed |= part_failed
        finally:
            # Every part has ended before this returns or raises, cancelled or not (the
            # caller's critical section ends then).
            for part in running:
                await settle(part)
        return failed

    def _delete_all(self, digests: tuple[str, ...]) -> set[str]:
        failed: set[str] = set()
        for digest in digests:
            try:
                self._remove(digest)
            except OSError as error:  # this blob's failure (a disk error, a directory in its place)
                log.warning("could not delete blob %s: %s", digest, error)
                failed.add(digest)
        return failed

    async def store_blob(
        self,
        digest: str,
        chunks: AsyncIterable[bytes],
        observe: Callable[[bytes], object],
        accept: Accept,
    ) -> int | None:
        upload_id = f"whole-{uuid.uuid4()}"
        await self.create_upload(upload_id)
        published = False
        try:
            size = await self.append_upload(upload_id, 0, chunks, observe)

            async def publish() -> None:
                nonlocal published
                await self.commit_upload(upload_id, digest, size)
                published = True

            await accept(size, publish)
            return size if published else None
        finally:
            await self.delete_upload(upload_id)  # gone already when committed

    async def create_upload(self, upload_id: str) -> None:
        path = self._upload(upload_id)
        path.parent.mkdir(parents=True)
        path.touch()

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterable[bytes],
        observe: Callable[[bytes], object] | None = None,
        length: int | None = None,
    ) -> int:
        path = self._upload(upload_id)
        try:
            handle = path.open("r+b", buffering=0)
        except FileNotFoundError as exc:
            raise UploadMissing(upload_id) from exc
        with handle:
            _claim(handle, path, upload_id)
            size = handle.seek(0, os.SEEK_END)
            if size != offset:
                raise OffsetMismatch(offset, size)
            unflushed = 0

            def write(batch: list[bytes]) -> None:
                nonlocal unflushed
                for chunk in batch:
                    if observe is not None:
                        observe(chunk)
                    _write_all(handle, chunk)
                    unflushed += len(chunk)
                if unflushed >= FLUSH_EVERY:
                    self._flush_soon(path)
                    unflushed = 0

            try:
                await pipeline(chunks, write)
                written = handle.tell() - offset
                if length is not None and written != length:
                    raise LengthMismatch(length, written)
            except BaseException:
                # A body cut short leaves nothing behind: the upload stays where it was.
                handle.truncate(offset)
                raise
            if unflushed:
                self._flush_soon(path)
            return offset + written

    def _flush_soon(self, path: Path) -> None:
        """Start writing an upload's bytes back to disk while more arrive (or the next chunk
        does), so the fsync that makes the blob durable at commit has only the tail left."""
        if not self.fsync or path in self._flush_pending:
            return
        self._flush_pending.add(path)
        self._flusher.submit(self._flush, path)

    def _flush(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return  # committed or cancelled meanwhile: nothing left to flush here
        finally:
            self._flush_pending.discard(path)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    async def read_upload(self, upload_id: str) -> AsyncIterator[bytes]:
        path = self._upload(upload_id)
        try:
            # Shared claim: no writer can be half way through what is read back.
            async for chunk in self._read_file(path, 0, None, upload_id):
                yield chunk
        except FileNotFoundError:
            raise UploadMissing(upload_id) from None

    async def commit_upload(self, upload_id: str, digest: str, size: int) -> None:
        source = self._upload(upload_id)
        target = self._blob(digest)
        await asyncio.get_running_loop().run_in_executor(None, self._commit, upload_id, source, target, size)

    def _commit(self, upload_id: str, source: Path, target: Path, size: int) -> None:
        try:
            handle = source.open("rb")
        except FileNotFoundError:
            raise UploadMissing(upload_id) from None
        with handle:
            _claim(handle, source, upload_id)
            actual = os.fstat(handle.fileno()).st_size
            if actual != size:
                raise OffsetMismatch(size, actual)
            if self.fsync:
                os.fsync(handle.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            # Same digest means same bytes: replacing an existing blob is harmless, and atomic.
            # The claim is held across the rename, so no writer can slip in before it.
            os.replace(source, target)
        if self.fsync:
            # Durable before the row names it: the file (above), its name in the blob's
            # directory, that directory's name in its prefix directory, and the prefix
            # directory's in sha256/: always, even where another writer made the prefix
            # directory and may not have synced it yet (a clean directory syncs at once).
            _fsync_dir(target.parent)
            _fsync_dir(target.parent.parent)
            _fsync_dir(target.parent.parent.parent)
        shutil.rmtree(source.parent, ignore_errors=True)

    async def delete_upload(self, upload_id: str) -> None:
        try:
            shutil.rmtree(self._upload(upload_id).parent)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    async def list_uploads(self) -> AsyncIterator[StagedUpload]:
        for staged in await asyncio.to_thread(_list_uploads, self.root / UPLOADS):
            yield staged

    async def stale_multipart(self, before: datetime) -> Sequence[PendingMultipart]:
        return []  # a file is written in place: nothing is left apart from the upload itself

    async def abort_multipart(self, pending: PendingMultipart) -> None:
        raise ValueError(f"a filesystem holds no multipart uploads ({pending.key})")
