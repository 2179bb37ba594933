"""The blob store protocol, one suite for every backend (a backend plugs in with a fixture)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wharf.storage.base import BlobStore, LengthMismatch, OffsetMismatch, UploadBusy, UploadMissing
from wharf.storage.filesystem import FilesystemBlobStore

from .conftest import tmpfs


@pytest.fixture(params=["filesystem", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "filesystem":
        yield FilesystemBlobStore(tmp_path / "root", fsync=True)
        return
    from wharf.storage.s3 import S3BlobStore

    s3 = request.getfixturevalue("s3_server")
    config = s3.storage_config(f"tests/{uuid.uuid4().hex}")
    yield S3BlobStore(
        config["bucket"],
        endpoint=config["regionendpoint"],
        access_key=config["accesskey"],
        secret_key=config["secretkey"],
        root=config["rootdirectory"],
        path_style=True,
        spool_directory=str(tmp_path),
    )


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def body(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(stream: AsyncIterator[bytes] | None) -> bytes:
    assert stream is not None
    return b"".join([chunk async for chunk in stream])


async def store_blob(store: BlobStore, data: bytes, upload_id: str = "u") -> str:
    await store.create_upload(upload_id)
    size = await store.append_upload(upload_id, 0, body(data))
    await store.commit_upload(upload_id, digest(data), size)
    return digest(data)


async def test_blob_is_visible_only_after_commit(blob_store):
    data = os.urandom(300_000)
    await blob_store.create_upload("u1")
    await blob_store.append_upload("u1", 0, body(data[:1000], data[1000:]))
    assert await blob_store.stat(digest(data)) is None
    await blob_store.commit_upload("u1", digest(data), len(data))
    assert await blob_store.stat(digest(data)) == len(data)
    assert await read_all(await blob_store.open(digest(data))) == data
    with pytest.raises(UploadMissing):
        await read_all(blob_store.read_upload("u1"))


async def test_ranges_and_listing_and_delete(blob_store):
    data = os.urandom(5 * 1024 * 1024 + 3)
    blob = await store_blob(blob_store, data)
    assert await read_all(await blob_store.open(blob, 10, 20)) == data[10:20]
    assert await read_all(await blob_store.open(blob, len(data) - 5)) == data[-5:]
    other = await store_blob(blob_store, b"other", "u2")
    assert sorted([d async for d in blob_store.list()]) == sorted([blob, other])
    described = await blob_store.describe(blob)
    assert described is not None and (described.digest, described.size) == (blob, len(data))
    # Garbage collection's grace period for files no row knows counts from this time.
    age = datetime.now(UTC) - described.modified
    assert timedelta(seconds=-5) < age < timedelta(minutes=5)
    assert await blob_store.delete(blob)
    assert await blob_store.stat(blob) is None
    assert not await blob_store.delete(blob)
    assert [d async for d in blob_store.list()] == [other]
    assert await blob_store.describe(blob) is None
    third = await store_blob(blob_store, b"third", "u3")
    await blob_store.delete_many([other, third, blob])  # blob is gone already: skipped
    assert [d async for d in blob_store.list()] == []


def small_pages(store: BlobStore, keys: int) -> bool:
    """Listing pages of ``keys`` keys on S3 (a request each), so a few blobs span many; True
    for S3. The filesystem lists 64 prefix directories at a time."""
    from wharf.storage.s3 import S3BlobStore

    if isinstance(store, S3BlobStore):
        store.list_page_size = keys
        return True
    return False


async def test_a_listing_across_many_pages_names_every_blob_once(blob_store):
    # S3: 30 blobs in pages of 4; filesystem: 120 blobs, spread over more than 64 prefixes.
    count = 30 if small_pages(blob_store, 4) else 120

    async def accept(_size: int, publish):
        await publish()

    stored = []
    for n in range(count):
        data = f"blob {n}".encode()
        await blob_store.store_blob(digest(data), body(data), lambda _chunk: None, accept)
        stored.append(digest(data))
    await store_blob(blob_store, b"staged, not a blob", "u1")  # uploads are never listed as blobs
    listed = [d async for d in blob_store.list()]
    assert sorted(listed) == sorted([*stored, digest(b"staged, not a blob")])


async def test_staged_uploads_across_pages_are_each_listed_once(blob_store):
    small_pages(blob_store, 2)  # S3: each upload's marker and parts span pages
    sizes = {}
    for n in range(5):
        await blob_store.create_upload(f"u{n}")
        offset = 0
        for _part in range(n):
            offset = await blob_store.append_upload(f"u{n}", offset, body(b"x" * (n + 1)))
        sizes[f"u{n}"] = offset
    listed = [(item.id, item.size) async for item in blob_store.list_uploads()]
    assert sorted(listed) == sorted(sizes.items())


async def test_appends_must_start_where_the_upload_ends(blob_store):
    await blob_store.create_upload("u1")
    assert await blob_store.append_upload("u1", 0, body(b"abc")) == 3
    with pytest.raises(OffsetMismatch):
        await blob_store.append_upload("u1", 0, body(b"xyz"))
    assert await blob_store.append_upload("u1", 3, body(b"def")) == 6
    assert await read_all(blob_store.read_upload("u1")) == b"abcdef"


async def test_a_body_shorter_than_declared_or_broken_leaves_nothing(blob_store):
    await blob_store.create_upload("u1")
    await blob_store.append_upload("u1", 0, body(b"keep"))
    with pytest.raises(LengthMismatch):
        await blob_store.append_upload("u1", 4, body(b"short"), length=10)

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await blob_store.append_upload("u1", 4, broken())
    assert await read_all(blob_store.read_upload("u1")) == b"keep"


async def test_observer_sees_every_byte_in_order(blob_store):
    parts = [os.urandom(n) for n in (10, 100_000, 1, 70_000)]
    seen = hashlib.sha256()
    await blob_store.create_upload("u1")
    await blob_store.append_upload("u1", 0, body(*parts), seen.update)
    assert "sha256:" + seen.hexdigest() == digest(b"".join(parts))


async def test_commit_refuses_bytes_that_were_not_verified(blob_store):
    await blob_store.create_upload("u1")
    await blob_store.append_upload("u1", 0, body(b"verified"))
    with pytest.raises(OffsetMismatch):
        await blob_store.commit_upload("u1", digest(b"verified"), 3)
    assert await blob_store.stat(digest(b"verified")) is None


async def test_two_writers_at_one_offset_one_wins_whole(blob_store):
    """Backends differ in who wins (a lock holder, or the first to store), never in this:
    one write lands whole, the other is refused, and nothing is interleaved or lost."""
    await blob_store.create_upload("u1")
    release, started = asyncio.Event(), asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first"
        started.set()  # the writer has the upload and asks for more
        await release.wait()
        yield b"rest"

    writing = asyncio.create_task(blob_store.append_upload("u1", 0, slow()))
    await asyncio.wait_for(started.wait(), 60)
    landed = []
    try:
        await blob_store.append_upload("u1", 0, body(b"intruder"))
        landed.append(b"intruder")
    except (UploadBusy, OffsetMismatch):
        pass
    with pytest.raises((UploadBusy, OffsetMismatch)):
        await blob_store.commit_upload("u1", digest(b"first"), 5)
    release.set()
    try:
        await writing
        landed.append(b"firstrest")
    except (UploadBusy, OffsetMismatch):
        pass
    assert len(landed) == 1
    assert await read_all(blob_store.read_upload("u1")) == landed[0]


async def test_cancelled_upload_is_gone(blob_store):
    await blob_store.create_upload("u1")
    await blob_store.append_upload("u1", 0, body(b"abc"))
    await blob_store.delete_upload("u1")
    await blob_store.delete_upload("u1")  # twice is fine
    with pytest.raises(UploadMissing):
        await blob_store.append_upload("u1", 3, body(b"d"))


@pytest.mark.parametrize("sizes", [(1000, 1, 70_000), (6 << 20, 6 << 20, 100)])
async def test_upload_written_in_several_requests_commits_whole(blob_store, sizes):
    parts = [os.urandom(n) for n in sizes]
    await blob_store.create_upload("u1")
    offset = 0
    for part in parts:
        offset = await blob_store.append_upload("u1", offset, body(part))
    data = b"".join(parts)
    await blob_store.commit_upload("u1", digest(data), len(data))
    assert await blob_store.stat(digest(data)) == len(data)
    assert digest(await read_all(await blob_store.open(digest(data)))) == digest(data)


@pytest.mark.parametrize("size", [0, 1000, 40 << 20])
async def test_whole_blob_with_known_digest_is_visible_only_when_accepted(blob_store, size):
    data = os.urandom(size)
    pieces = [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    seen = hashlib.sha256()

    async def accept(n: int, publish):
        if "sha256:" + seen.hexdigest() == digest(data):
            await publish()

    stored = await blob_store.store_blob(digest(data), body(*pieces), seen.update, accept)
    assert stored == size
    assert await blob_store.stat(digest(data)) == size
    assert digest(await read_all(await blob_store.open(digest(data)))) == digest(data)


async def test_whole_blob_refused_leaves_nothing(blob_store):
    data = os.urandom(20 << 20)
    claimed = digest(b"something else")

    async def refuse(n: int, publish):
        pass

    assert await blob_store.store_blob(claimed, body(data), lambda chunk: None, refuse) is None
    assert await blob_store.stat(claimed) is None
    assert [d async for d in blob_store.list()] == []


async def test_opening_a_missing_blob_says_so_before_any_byte(blob_store):
    assert await blob_store.open(digest(b"never stored")) is None


async def test_a_cancelled_write_leaves_the_upload_where_it_was(blob_store):
    await blob_store.create_upload("u1")
    await blob_store.append_upload("u1", 0, body(b"keep"))

    working, busy = threading.Event(), threading.Lock()

    def slow(chunk: bytes) -> None:
        with busy:
            working.set()
            time.sleep(0.4)  # the thread is still at work when the request is cancelled

    async def stalled() -> AsyncIterator[bytes]:
        for _ in range(20):  # more than the pipeline holds: the request waits on the thread
            yield b"x" * 100
        await asyncio.sleep(30)
        yield b"never"

    writing = asyncio.create_task(blob_store.append_upload("u1", 4, stalled(), slow))
    deadline = time.monotonic() + 60
    while not working.is_set():
        assert time.monotonic() < deadline, "the write never reached its thread"
        await asyncio.sleep(0.01)
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert not busy.locked(), "the cancelled write returned while its thread was still writing"
    assert await blob_store.append_upload("u1", 4, body(b"more")) == 8
    assert await read_all(blob_store.read_upload("u1")) == b"keepmore"


async def test_staged_uploads_are_listed_with_their_size_and_last_write(blob_store):
    before = datetime.now(UTC) - timedelta(seconds=2)  # S3 keeps whole seconds
    await blob_store.create_upload("written")
    await blob_store.append_upload("written", 0, body(b"12345"))
    await blob_store.append_upload("written", 5, body(b"678"))
    await blob_store.create_upload("empty")
    listed = {item.id: item async for item in blob_store.list_uploads()}
    assert {key: item.size for key, item in listed.items()} == {"written": 8, "empty": 0}
    assert all(
        before <= item.modified <= datetime.now(UTC) + timedelta(seconds=1) for item in listed.values()
    )
    await blob_store.delete_upload("written")
    assert [item.id async for item in blob_store.list_uploads()] == ["empty"]
    assert await blob_store.stale_multipart(datetime.now(UTC) + timedelta(hours=1)) == []


def test_a_committed_blob_is_durable_with_every_directory_above_it(tmp_path, monkeypatch):
    """The file, its directory, the prefix directory and sha256/ above it are all fsynced
    before the commit returns (and so before the row names the blob): after a power loss
    the row's blob is there. Also for a second blob under a prefix another writer made."""
    store = FilesystemBlobStore(tmp_path / "root", fsync=True)
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    first = asyncio.run(store_blob(store, b"first"))
    data = tmp_path / "root" / "docker/registry/v2/blobs/sha256" / first[7:9] / first[7:] / "data"
    assert data.is_file()
    assert str(tmp_path / "root/wharf/uploads/u/data") in synced, synced  # its bytes, before the rename
    for directory in (data.parent, data.parent.parent, data.parent.parent.parent):
        assert str(directory) in synced, (directory, synced)

    synced.clear()
    prefix = data.parent.parent
    for n in range(1000):  # another blob under the same two-character prefix
        other = f"other {n}".encode()
        if digest(other)[7:9] == first[7:9]:
            break
    second = asyncio.run(store_blob(store, other, "u2"))
    for directory in (prefix / second[7:], prefix, prefix.parent):
        assert str(directory) in synced, (directory, synced)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a disk that fills up."""
    with tmpfs(tmp_path / "small", "256k") as mountpoint:
        yield mountpoint


async def test_a_blob_whose_last_write_is_cut_short_by_a_full_disk_is_not_stored(small_disk):
    """On a nearly full disk a write may store part of its bytes and say so only in its
    count. The blob's digest was checked over every byte received, so storing fewer would
    publish a blob shorter than its digest: the write must fail instead, leaving nothing."""
    store = FilesystemBlobStore(small_disk, fsync=True)
    await store.create_upload("probe")  # the directories an upload needs, made beforehand
    await store.delete_upload("probe")
    room = os.statvfs(small_disk)
    free = room.f_bavail * room.f_frsize
    data = os.urandom(free + 20_000)
    first, last = data[: free - 8192], data[free - 8192 :]  # the disk fills inside the last chunk
    seen = hashlib.sha256()

    async def accept(_size: int, publish):
        if "sha256:" + seen.hexdigest() == digest(data):
            await publish()

    with pytest.raises(OSError) as full:
        await store.store_blob(digest(data), body(first, last), seen.update, accept)
    assert full.value.errno == errno.ENOSPC
    assert await store.stat(digest(data)) is None
    assert [d async for d in store.list()] == []
