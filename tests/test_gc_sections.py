"""Every site of a digest's critical section holds it until its storage and row work has
ended, whatever cancels its caller (GC invariant 3, DESIGN.md). Each test cancels the
section's caller while a thread still does that work (a storage thread deleting bytes, the
SQLite writer thread recording a row: no cancel stops a thread), lets a push or a
collection of the same digest race it, and then finds no row without its bytes. On both
stacks; each fails with ``engines.run_in_section`` reduced to a bare ``async with``."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from wharf.services.gc import GCOptions
from wharf.services.registry import Registry

from .callers import ADMIN, ANYONE
from .oci import sha256
from .test_gc_invariants import backdate, body, registry

pytestmark = pytest.mark.slow
__all__ = ["registry"]  # the fixture, shared with test_gc_invariants

# How long a held-back thread waits for the race it is there to allow. With the sections
# right, the racer is blocked for all of it; without them, it gets through well before.
RACE_WINDOW = 3.0


def threaded(
    work: Callable[..., Awaitable[Any]], entered: asyncio.Event, go: threading.Event
) -> Callable[..., Awaitable[Any]]:
    """``work`` run from a thread that first waits for ``go`` (or the race window): once it
    has begun, cancelling whoever awaits it does not stop it, as with a real storage or
    database thread."""
    loop = asyncio.get_running_loop()

    def in_thread(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        go.wait(RACE_WINDOW)
        return asyncio.run_coroutine_threadsafe(work(*args, **kwargs), loop).result()

    async def started(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        return await asyncio.to_thread(in_thread, args, kwargs)

    return started


async def consistent(registry: Registry, repository: str, digest: str, size: int) -> None:
    """No row without bytes: if the repository reads the blob, storage holds it whole."""
    if await registry.meta.blobs.readable_size(repository, digest) is not None:
        assert await registry.storage.stat(digest) == size, f"{digest}: a row without its bytes"


async def cancel_mid_delete(
    registry: Registry, options: GCOptions
) -> tuple[threading.Event, asyncio.Task[object]]:
    """Start a collection whose byte deletes happen on a held-back thread, and cancel it
    once they have begun; returns the event that lets the thread go on, and the collection."""
    entered, go = asyncio.Event(), threading.Event()
    delete_many = registry.storage.delete_many
    registry.gc.storage.delete_many = threaded(delete_many, entered, go)  # type: ignore[method-assign]
    collection: asyncio.Task[object] = asyncio.create_task(registry.gc.run(ADMIN, options))
    await asyncio.wait_for(entered.wait(), 60)
    collection.cancel()
    registry.gc.storage.delete_many = delete_many  # type: ignore[method-assign]
    return go, collection


async def push_during(
    registry: Registry, repository: str, data: bytes, held: tuple[threading.Event, asyncio.Task[object]]
) -> None:
    """Push ``data`` while the cancelled collection's deletion is held back, then let it go."""
    go, collection = held
    push = asyncio.create_task(registry.uploads.monolithic(ANYONE, repository, sha256(data), body(data)))
    await asyncio.wait({push}, timeout=RACE_WINDOW / 2)  # done at once only without the section
    go.set()
    await asyncio.wait_for(push, 60)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(collection, 60)
    assert await registry.meta.blobs.readable_size(repository, sha256(data)) == len(data)
    await consistent(registry, repository, sha256(data), len(data))


async def test_journal_batch_cancelled_mid_delete_keeps_a_repushed_blob(registry: Registry):
    """The journal loop: a run that deleted the row and died before the bytes leaves the
    digest in gc_pending; the next run deletes those bytes. Cancelled while a thread does,
    its section must last until the thread has ended, or a push in between is undone."""
    data = os.urandom(4096)
    digest = sha256(data)
    await registry.uploads.monolithic(ANYONE, "lib/journal", digest, body(data))
    backdate(registry, digest)

    async def crash(_digests: object) -> None:
        raise OSError("the storage went away after the rows were deleted")

    delete_many = registry.storage.delete_many
    registry.gc.storage.delete_many = crash  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await registry.gc.run(ADMIN, GCOptions(grace=timedelta(hours=1)))
    registry.gc.storage.delete_many = delete_many  # type: ignore[method-assign]
    assert await registry.meta.gc.pending() == [(digest, len(data))]
    assert await registry.storage.stat(digest) == len(data)

    held = await cancel_mid_delete(registry, GCOptions(grace=timedelta(hours=1)))
    await push_during(registry, "lib/journal", data, held)


async def test_orphan_batch_cancelled_mid_delete_keeps_a_repushed_blob(registry: Registry):
    """The orphan loop: bytes no row knows, found by a storage scan, deleted in a section."""
    data = os.urandom(4096)
    digest = sha256(data)

    async def accept(_size: int, publish: Callable[[], Awaitable[None]]) -> None:
        await publish()

    await registry.storage.store_blob(digest, body(data), lambda _chunk: None, accept)
    held = await cancel_mid_delete(registry, GCOptions(grace=timedelta(0), scan_storage=True))
    await push_during(registry, "lib/orphan", data, held)


async def test_blob_batch_cancelled_mid_delete_keeps_a_repushed_blob(registry: Registry):
    """The blob sweep: rows, then bytes, of blobs no manifest names."""
    data = os.urandom(4096)
    await registry.uploads.monolithic(ANYONE, "lib/sweep", sha256(data), body(data))
    backdate(registry, sha256(data))
    held = await cancel_mid_delete(registry, GCOptions(grace=timedelta(hours=1)))
    await push_during(registry, "lib/sweep", data, held)


async def collect_during_row_write(registry: Registry, push: Callable[[], Awaitable[object]]) -> None:
    """A push whose row is written by a held-back thread is cancelled once its bytes are in;
    a collection scanning storage then finds bytes no row knows yet. It must wait for the
    push's section (which ends with the row), and so keep them."""
    entered, go = asyncio.Event(), threading.Event()
    link_blob = registry.meta.blobs.link
    registry.uploads.meta.blobs.link = threaded(link_blob, entered, go)  # type: ignore[method-assign]
    pushing = asyncio.create_task(push())
    await asyncio.wait_for(entered.wait(), 60)
    registry.uploads.meta.blobs.link = link_blob  # type: ignore[method-assign]
    pushing.cancel()

    delete_many = registry.storage.delete_many

    async def deleting(digests: list[str]) -> set[str]:
        go.set()  # without the section, the row lands only after the bytes are gone
        return await delete_many(digests)

    registry.gc.storage.delete_many = deleting  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(registry.gc.run(ADMIN, GCOptions(grace=timedelta(0), scan_storage=True)), 60)
    finally:
        go.set()
        registry.gc.storage.delete_many = delete_many  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(pushing, 60)


async def test_a_whole_blob_push_cancelled_before_its_row_keeps_its_bytes(registry: Registry):
    """The whole-blob store (a monolithic PUT, or a POST with the digest): bytes, then row."""
    data = os.urandom(4096)
    digest = sha256(data)
    await collect_during_row_write(
        registry, lambda: registry.uploads.monolithic(ANYONE, "lib/whole", digest, body(data))
    )
    assert await registry.meta.blobs.readable_size("lib/whole", digest) == len(data)
    await consistent(registry, "lib/whole", digest, len(data))


async def test_an_upload_commit_cancelled_before_its_row_keeps_its_bytes(registry: Registry):
    """The upload commit (PATCH, then PUT with the digest): the session's bytes become the blob."""
    data = os.urandom(4096)
    digest = sha256(data)
    started = await registry.uploads.start(ANYONE, "lib/chunked")
    await registry.uploads.append(ANYONE, "lib/chunked", started.id, body(data[:1000]))

    async def finish() -> str:
        return await registry.uploads.finish(ANYONE, "lib/chunked", started.id, digest, body(data[1000:]))

    await collect_during_row_write(registry, finish)
    assert await registry.meta.blobs.readable_size("lib/chunked", digest) == len(data)
    await consistent(registry, "lib/chunked", digest, len(data))


@pytest.mark.parametrize("kind", ["monolithic", "chunked"])
async def test_a_push_meeting_a_lease_that_does_not_end_is_answered_503_and_stores_nothing(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A deletion left under way by a killed process (its lease lasting minutes on S3): the
    push waits a while, then is told to retry, with nothing of it stored (a session keeps
    its bytes, to be finished again); once the lease has gone the same push goes through."""
    from wharf.errors import RegistryError
    from wharf.services import deleting

    monkeypatch.setattr(deleting, "WAIT_MAX", 0.3)
    data = os.urandom(2048)
    digest = sha256(data)
    repository = f"lib/leased-{kind}"

    async def push() -> None:
        if kind == "monolithic":
            await registry.uploads.monolithic(ANYONE, repository, digest, body(data))
            return
        started = await registry.uploads.start(ANYONE, repository)
        await registry.uploads.append(ANYONE, repository, started.id, body(data[:1000]))
        try:
            await registry.uploads.finish(ANYONE, repository, started.id, digest, body(data[1000:]))
        except RegistryError:
            assert (await registry.uploads.status(ANYONE, repository, started.id)).offset == len(data)
            raise

    holder = await registry.meta.gc.lease_deletes([digest], 600)
    with pytest.raises(RegistryError) as refused:
        await push()
    assert refused.value.code.status == 503 and refused.value.code.code == "UNAVAILABLE"
    assert digest in refused.value.message and "retry" in refused.value.message
    assert int(refused.value.headers["Retry-After"]) > 500
    assert await registry.meta.blobs.readable_size(repository, digest) is None
    assert await registry.storage.stat(digest) is None, "bytes stored under a deletion's lease"

    await registry.meta.gc.end_deletes(holder)
    await push()
    assert await registry.storage.stat(digest) == len(data)
    assert await registry.meta.blobs.readable_size(repository, digest) == len(data)
