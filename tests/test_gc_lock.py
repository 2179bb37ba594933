"""Invariant 6 when the lock itself goes: on PostgreSQL the GC lock is a session advisory
lock, which ends with its connection. A collection whose lock connection ends (its backend
terminated) must stop before its next batch, since another may start at once."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from wharf.config import Settings
from wharf.meta import migrate
from wharf.meta.engines import EXCLUSIVE_CLASS, EXCLUSIVE_IDS
from wharf.services.gc import GCLockLost, GCOptions
from wharf.services.registry import Registry
from wharf.wiring import build_registry

from .callers import ADMIN, ANYONE
from .conftest import STACKS, stack_config
from .oci import sha256
from .server import deep_merge
from .test_gc_invariants import backdate, body

pytestmark = pytest.mark.slow

LOST = "the GC lock was lost (its database connection ended)"
# The backends holding the GC lock (a two-integer advisory lock: objsubid 2).
HOLDERS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
    f" AND classid = {EXCLUSIVE_CLASS} AND objid = {EXCLUSIVE_IDS['gc']}"
)


def _settings(config: dict[str, object], tmp_path: Path) -> Settings:
    base: dict[str, object] = {
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}, "fsync": False}
    }
    if "s3" in config.get("storage", {}):  # type: ignore[operator]
        base = {"storage": {"fsync": False}}
    settings = Settings.model_validate(deep_merge(base, config))
    migrate.upgrade(settings.database_url)
    return settings


@pytest.fixture
async def replicas(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Registry, Registry]]:
    """Two registries (replicas) in this process over one PostgreSQL database and one bucket."""
    async with _two_replicas(request, tmp_path, "s3") as pair:
        yield pair


@asynccontextmanager
async def _two_replicas(
    request: pytest.FixtureRequest, tmp_path: Path, storage: str
) -> AsyncIterator[tuple[Registry, Registry]]:
    with stack_config(request, "postgresql+s3") as config:
        if storage == "filesystem":
            config = {key: value for key, value in config.items() if key != "storage"}
        settings = _settings(config, tmp_path)
        first, second = build_registry(settings), build_registry(settings)
        first.settings = second.settings = settings  # type: ignore[attr-defined]
        yield first, second
        await first.close()
        await second.close()


async def _holders(url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return [row[0] for row in await (await conn.execute(HOLDERS)).fetchall()]


async def _until(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def test_a_collection_whose_lock_connection_ends_stops_at_its_next_batch(
    replicas: tuple[Registry, Registry],
) -> None:
    first, second = replicas
    url: str = first.settings.database_url  # type: ignore[attr-defined]
    digests = []
    for n in range(6):
        data = os.urandom(1024)
        await first.uploads.monolithic(ANYONE, f"lib/lost-{n}", sha256(data), body(data))
        backdate(first, sha256(data))
        digests.append(sha256(data))

    # Who deletes bytes when: "never two sweeping at once" is read from this.
    log: list[tuple[str, str]] = []
    entered, release = asyncio.Event(), asyncio.Event()

    def watch(name: str, registry: Registry, pause: bool) -> None:
        delete_many = registry.storage.delete_many

        async def recorded(targets: list[str]) -> set[str]:
            log.append((name, "start"))
            if pause and not entered.is_set():  # the first batch waits, mid-sweep
                entered.set()
                await release.wait()
            failed = await delete_many(targets)
            log.append((name, "end"))
            return failed

        registry.gc.storage.delete_many = recorded  # type: ignore[method-assign]

    watch("first", first, pause=True)
    watch("second", second, pause=False)
    options = GCOptions(grace=timedelta(hours=1), batch=1, mode="online")
    collection = asyncio.create_task(first.gc.run(ADMIN, options))
    await asyncio.wait_for(entered.wait(), 60)

    [pid] = await _holders(url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # The lock went with its backend: a second collection takes it while the first still runs.
    other = asyncio.create_task(second.gc.run(ADMIN, options))

    async def second_holds() -> bool:
        assert not other.done(), other
        return any(holder != pid for holder in await _holders(url))

    await _until("the second collection holds the GC lock", second_holds)
    release.set()

    with pytest.raises(GCLockLost, match="GC lock was lost"):
        await asyncio.wait_for(collection, 60)
    outcome = await asyncio.wait_for(other, 120)
    assert outcome.run.status == "done"

    # The first deleted the batch it was in, and nothing after the second began.
    starts = [name for name, what in log if what == "start"]
    assert starts[0] == "first" and "first" not in starts[starts.index("second") :], log
    assert starts.count("first") == 1, log
    runs = {run.id: run for run in await second.meta.gc.runs(limit=5)}
    [failed] = [run for run in runs.values() if run.status == "failed"]
    assert failed.reason is not None and LOST in failed.reason
    assert failed.blobs_deleted == 1
    for digest in digests:  # all collected, once, between the two
        assert await first.storage.stat(digest) is None
    assert not await first.meta.blobs.present(digests)
    assert await _holders(url) == []  # nobody holds the lock now


@pytest.mark.parametrize("stack", STACKS)
async def test_a_lock_held_is_not_lost_and_a_refused_one_says_so(
    request: pytest.FixtureRequest, tmp_path: Path, stack: str
) -> None:
    """On SQLite the lock is a file lock held by this process, which cannot be lost; on
    PostgreSQL a held lock whose connection lives is not lost either."""
    with stack_config(request, stack) as config:
        registry = build_registry(_settings(config, tmp_path))
        other = build_registry(_settings(config, tmp_path))
        try:
            async with registry.meta.gc_lock() as held:
                assert held and not await held.lost()
                async with other.meta.gc_lock() as refused:
                    assert not refused and not await refused.lost()
                assert not await held.lost()
            async with other.meta.gc_lock() as again:  # released at the end of the block
                assert again
        finally:
            await registry.close()
            await other.close()


async def test_bytes_are_not_deleted_once_their_digest_section_has_gone_with_its_connection(
    replicas: tuple[Registry, Registry],
) -> None:
    """Invariant 3 when a section's own locks go: on PostgreSQL a digest section is held by
    session advisory locks on one connection. If that connection ends after the batch's
    rows are deleted, a push of those digests may take the section at once, so the bytes
    must not be deleted then: the run stops, the rows stay journalled (a leak), and the next
    run, holding its sections, deletes the bytes."""
    from wharf.meta import engines

    first, _second = replicas
    data = os.urandom(1024)
    digest = sha256(data)
    await first.uploads.monolithic(ANYONE, "lib/cut", digest, body(data))
    backdate(first, digest)
    url: str = first.settings.database_url  # type: ignore[attr-defined]
    delete_blobs = first.meta.gc.delete_blobs

    async def then_cut(*args: object) -> list[tuple[str, int]]:
        gone = await delete_blobs(*args)  # type: ignore[arg-type]
        held = engines._section_connection.get()  # the section this batch runs in
        assert held is not None
        pid = await held.scalar(sa.text("SELECT pg_backend_pid()"))
        await held.commit()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return gone

    first.meta.gc.delete_blobs = then_cut  # type: ignore[method-assign]
    with pytest.raises(GCLockLost, match="digest section was lost"):
        await first.gc.run(ADMIN, GCOptions(grace=timedelta(hours=1)))
    first.meta.gc.delete_blobs = delete_blobs  # type: ignore[method-assign]
    assert await first.storage.stat(digest) == len(data), "bytes deleted outside their section"
    assert [d for d, _size in await first.meta.gc.pending()] == [digest]

    outcome = await first.gc.run(ADMIN, GCOptions(grace=timedelta(hours=1)))
    assert outcome.run.blobs_deleted == 1 and outcome.run.bytes_freed == len(data)
    assert await first.storage.stat(digest) is None


@pytest.fixture(params=["s3", "filesystem"])
async def pg_replicas(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Registry, Registry]]:
    """Two registries over one PostgreSQL database, sharing a bucket or a directory."""
    async with _two_replicas(request, tmp_path, request.param) as pair:
        yield pair


async def test_a_deletion_that_outlives_its_section_does_not_take_a_push_made_meanwhile(
    pg_replicas: tuple[Registry, Registry],
) -> None:
    """Invariant 3 when a section's locks go while its bytes are being deleted: on PostgreSQL
    they go with their connection, and a push of the digest may take the section at once.
    The deleter's lease on those bytes makes the push wait until the deletion has ended, then
    store its bytes again. Without the lease the push lands first and the deletion, still
    under way, takes its bytes: a row without bytes."""
    from wharf.meta import engines

    first, second = pg_replicas
    data = os.urandom(1024)
    digest = sha256(data)
    await first.uploads.monolithic(ANYONE, "lib/outlived", digest, body(data))
    backdate(first, digest)
    url: str = first.settings.database_url  # type: ignore[attr-defined]
    cut, go = asyncio.Event(), asyncio.Event()
    delete_many = first.gc.storage.delete_many

    async def cut_then_delete(digests: list[str]) -> set[str]:
        held = engines._section_connection.get()  # the section this deletion runs in
        assert held is not None
        pid = await held.scalar(sa.text("SELECT pg_backend_pid()"))
        await held.commit()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        cut.set()
        await go.wait()  # the deletion is still on its way while the section is gone
        return await delete_many(digests)

    first.gc.storage.delete_many = cut_then_delete  # type: ignore[method-assign]
    leases = second.meta.gc.delete_lease_left
    met = 0  # times the push found the lease
    waiting = asyncio.Event()

    async def noted(wanted: str | None = None) -> float | None:
        nonlocal met
        left = await leases(wanted)
        if left is not None:
            met += 1
            if met >= 3:
                waiting.set()
        return left

    second.meta.gc.delete_lease_left = noted  # type: ignore[method-assign]
    collection = asyncio.create_task(first.gc.run(ADMIN, GCOptions(grace=timedelta(hours=1))))
    await asyncio.wait_for(cut.wait(), 60)
    push = asyncio.create_task(second.uploads.monolithic(ANYONE, "lib/again", digest, body(data)))
    # The push either waits on the lease or (without it) lands while the deletion is held back.
    noticed = asyncio.create_task(waiting.wait())
    await asyncio.wait({push, noticed}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if waiting.is_set():  # it has looked three times, and is still waiting, row-less
        assert not push.done(), push
        assert await second.meta.blobs.readable_size("lib/again", digest) is None
    go.set()
    await asyncio.wait_for(collection, 120)
    await asyncio.wait_for(push, 60)
    noticed.cancel()

    assert await second.meta.blobs.readable_size("lib/again", digest) == len(data)
    assert await second.storage.stat(digest) == len(data), "the push's bytes went with the deletion"
    assert waiting.is_set(), "the push never met the lease"
    assert await second.meta.gc.delete_lease_left(digest) is None  # ended with the deletion
