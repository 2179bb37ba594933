"""The GC invariants that need a collection caught in the act: one critical section per
digest (3), a collection killed half way (5), one collection at a time (6). On both stacks."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wharf.config import Settings
from wharf.errors import RegistryError
from wharf.services.gc import GCBusy, GCOptions
from wharf.services.registry import Registry
from wharf.storage.filesystem import FilesystemBlobStore
from wharf.storage.paths import blob_path
from wharf.wiring import build_registry

from .callers import ADMIN, ANYONE
from .conftest import STACKS, stack_config
from .gc import eligible, gc_command, gc_env, run_gc, set_blob_seen, stored_digests
from .oci import OCI_MANIFEST, Image, sha256
from .server import deep_merge
from .test_gc import pulls

pytestmark = pytest.mark.slow


@pytest.fixture(params=STACKS)
async def registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Registry]:
    """The services over real stores, in this process: a collection can be paused inside."""
    with stack_config(request, request.param) as config:
        base = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}, "fsync": False}}
        if "s3" in config.get("storage", {}):
            base = {"storage": {"fsync": False}}
        settings = Settings.model_validate(deep_merge(base, config))
        from wharf.meta import migrate

        migrate.upgrade(settings.database_url)
        instance = build_registry(settings)
        instance.settings = settings  # type: ignore[attr-defined]
        yield instance
        await instance.close()


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def backdate(registry: Registry, digest: str) -> None:
    class Target:
        database_url = registry.settings.database_url  # type: ignore[attr-defined]

    set_blob_seen(Target, digest, datetime.now(UTC) - timedelta(hours=2))  # type: ignore[arg-type]


async def test_a_push_of_a_digest_being_collected_waits_and_keeps_its_bytes(registry: Registry):
    """Invariant 3. GC is paused after deleting the row, before deleting the bytes; a push of
    the same bytes then waits for the section to end, and stores them again after. Without
    the section, the push would finish in the pause and GC would delete its bytes."""
    data = os.urandom(4096)
    digest = sha256(data)
    await registry.uploads.monolithic(ANYONE, "lib/race", digest, body(data))
    backdate(registry, digest)

    entered, release = asyncio.Event(), asyncio.Event()
    delete_many = registry.storage.delete_many

    async def paused_delete(targets: list[str]) -> set[str]:
        entered.set()
        await release.wait()
        return await delete_many(targets)

    registry.gc.storage.delete_many = paused_delete  # type: ignore[method-assign]
    collection = asyncio.create_task(
        registry.gc.run(ADMIN, GCOptions(grace=timedelta(hours=1), scan_storage=False))
    )
    await asyncio.wait_for(entered.wait(), 120)

    # Meanwhile a manifest naming the blob is refused: its row is gone already.
    image = Image(config=data, layers=[])
    with pytest.raises(RegistryError) as refused:
        await registry.manifests.put(ANYONE, "lib/race", "v1", image.manifest, OCI_MANIFEST)
    assert refused.value.code.code == "MANIFEST_BLOB_UNKNOWN"

    push = asyncio.create_task(registry.uploads.monolithic(ANYONE, "lib/race", digest, body(data)))
    await asyncio.sleep(0.5)
    assert not push.done(), "the push must wait for the collection's critical section"
    release.set()
    outcome = await asyncio.wait_for(collection, 120)
    await asyncio.wait_for(push, 120)

    assert [d for d, _size in outcome.deleted_blobs] == [digest]
    assert await registry.meta.blobs.readable_size("lib/race", digest) == len(data)
    assert await registry.storage.stat(digest) == len(data)
    await registry.manifests.put(ANYONE, "lib/race", "v1", image.manifest, OCI_MANIFEST)


async def test_a_collection_cancelled_mid_batch_ends_its_section_after_the_bytes(registry: Registry):
    """Invariant 3 when the collection is cancelled (a job handed back at shutdown) while a
    storage thread deletes a batch's bytes: the thread goes on regardless, so the section
    must not end before it has. Otherwise a push of the digest could store its bytes in
    between, and the late delete would leave its row without bytes."""
    data = os.urandom(4096)
    digest = sha256(data)
    await registry.uploads.monolithic(ANYONE, "lib/cancel", digest, body(data))
    backdate(registry, digest)

    loop = asyncio.get_running_loop()
    entered, deleted = asyncio.Event(), threading.Event()
    delete_many = registry.storage.delete_many

    def slow_storage(targets: list[str]) -> set[str]:  # a storage thread, which no cancel stops
        time.sleep(0.5)
        failed = asyncio.run_coroutine_threadsafe(delete_many(targets), loop).result()
        deleted.set()
        return failed

    async def threaded_delete(targets: list[str]) -> set[str]:
        entered.set()
        return await asyncio.to_thread(slow_storage, targets)

    registry.gc.storage.delete_many = threaded_delete  # type: ignore[method-assign]
    collection = asyncio.create_task(registry.gc.run(ADMIN, GCOptions(grace=timedelta(hours=1))))
    await asyncio.wait_for(entered.wait(), 120)
    collection.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(collection, 120)
    assert deleted.is_set(), "the collection ended while its bytes were still being deleted"
    [cancelled] = await registry.meta.gc.runs(limit=1)
    assert (cancelled.status, cancelled.reason) == (
        "stopped",
        "cancelled; what is left is collected next time",
    )

    await registry.uploads.monolithic(ANYONE, "lib/cancel", digest, body(data))  # pushed again
    assert await registry.meta.blobs.readable_size("lib/cancel", digest) == len(data)
    assert await registry.storage.stat(digest) == len(data)


async def test_a_manifest_committed_after_the_mark_keeps_its_blobs(registry: Registry):
    """Invariant 1 against a push racing the collection: the plan was made while the blobs
    were unreferenced, a manifest naming them commits before the sweep, and the sweep reads
    the references again under the row locks. Without that second look it deletes them."""
    image = Image.random()
    for blob in image.blobs:
        await registry.uploads.monolithic(ANYONE, "lib/late", sha256(blob), body(blob))
        backdate(registry, sha256(blob))
    candidates = registry.meta.gc.blob_candidates

    async def then_push(*args: object) -> list[tuple[str, int]]:
        planned = await candidates(*args)  # type: ignore[arg-type]
        await registry.manifests.put(ANYONE, "lib/late", "v1", image.manifest, OCI_MANIFEST)
        return planned

    registry.meta.gc.blob_candidates = then_push  # type: ignore[method-assign]
    outcome = await registry.gc.run(ADMIN, GCOptions(grace=timedelta(hours=1), scan_storage=False))

    assert {d for d, _size in outcome.plan.blobs} == {sha256(blob) for blob in image.blobs}
    assert outcome.deleted_blobs == []
    for blob in image.blobs:
        assert await registry.storage.stat(sha256(blob)) == len(blob)
    assert (await registry.manifests.get(ANYONE, "lib/late", "v1")).digest == image.digest


async def test_a_blob_found_by_a_head_after_the_mark_is_kept(registry: Registry):
    """Invariant 2 at sweep time: the plan was made while the blob was unreferenced and last
    seen before the grace period; a push in progress then finds it present (a HEAD, which
    marks it seen) before the sweep. The sweep checks the grace period again under the row
    lock, so the blob stays; without that check it goes, and the push's manifest fails."""
    data = os.urandom(4096)
    digest = sha256(data)
    await registry.uploads.monolithic(ANYONE, "lib/headed", digest, body(data))
    backdate(registry, digest)
    candidates = registry.meta.gc.blob_candidates

    async def then_head(*args: object) -> object:
        planned = await candidates(*args)  # type: ignore[arg-type]
        await registry.blobs.stat(ANYONE, "lib/headed", digest)  # HEAD /v2/lib/headed/blobs/<digest>
        return planned

    registry.meta.gc.blob_candidates = then_head  # type: ignore[method-assign]
    outcome = await registry.gc.run(ADMIN, GCOptions(grace=timedelta(hours=1)))

    assert [d for d, _size in outcome.plan.blobs] == [digest]
    assert outcome.deleted_blobs == []
    assert await registry.storage.stat(digest) == len(data)
    image = Image(config=data, layers=[])
    await registry.manifests.put(ANYONE, "lib/headed", "v1", image.manifest, OCI_MANIFEST)


async def test_only_one_collection_runs_at_a_time(registry: Registry):
    """Invariant 6, in one process here; test_gc_cli_refuses_while_another_runs across processes."""
    async with registry.meta.gc_lock() as held:
        assert held
        with pytest.raises(GCBusy):
            await registry.gc.run(ADMIN, GCOptions(grace=timedelta(0)))
    outcome = await registry.gc.run(ADMIN, GCOptions(grace=timedelta(0)))
    assert outcome.run.status == "done"


def test_gc_cli_refuses_while_another_runs(own_server):
    """Invariant 6 across processes (and, on PostgreSQL, across machines: the lock is the database's)."""
    from wharf.config import load_settings

    settings = load_settings(str(own_server.config_path))

    async def hold_and_run() -> subprocess.CompletedProcess[str]:
        registry = build_registry(settings)
        try:
            async with registry.meta.gc_lock() as held:
                assert held
                return await asyncio.to_thread(run_gc, own_server, "--grace", "0s", check=False)
        finally:
            await registry.close()

    busy = asyncio.run(hold_and_run())
    assert busy.returncode == 2
    assert "another garbage collection is running" in busy.stderr
    assert run_gc(own_server, "--grace", "0s").returncode == 0


@pytest.mark.parametrize("registry", ["sqlite+filesystem"], indirect=True)
async def test_a_delete_killed_between_a_blobs_file_and_its_directory_is_finished_next_run(
    registry: Registry,
):
    """Invariant 5 where deleting a blob's bytes takes two steps (the filesystem: unlink its
    file, then remove its directory; S3 takes one). A collection killed between the two
    leaves the row gone, the journal entry, and an empty directory that a listing of
    storage still names. The next run deletes the journalled digest again, and that delete
    must finish the one begun: without it the directory stays for ever (a scan of storage
    skips it too, finding no file)."""
    data = os.urandom(64)
    digest = sha256(data)
    await registry.uploads.monolithic(ANYONE, "lib/half", digest, body(data))
    # What the killed run did: rows deleted and journalled (one transaction), then the file.
    gone = await registry.meta.gc.delete_blobs([digest], datetime.now(UTC) + timedelta(hours=1))
    assert gone == [(digest, len(data))]
    store = registry.storage
    assert isinstance(store, FilesystemBlobStore)
    data_file = store.root / blob_path(digest)
    data_file.unlink()
    assert digest in {found async for found in store.list()}

    outcome = await registry.gc.run(ADMIN, GCOptions(grace=timedelta(0)))
    assert outcome.plan.vanished == [digest]
    assert outcome.run.blobs_deleted == 0  # its bytes went with the killed run: not freed now
    assert not data_file.parent.exists()
    assert digest not in {found async for found in store.list()}
    assert await registry.meta.gc.pending() == []


def test_gc_killed_half_way_leaves_every_image_pullable_and_the_next_run_finishes(own_server):
    """Invariant 5: SIGKILL in the middle of the sweep, then again from the start."""
    live, doomed = [], []
    with own_server.client() as client:
        from .oci import push_image

        for number in range(8):
            image = Image.random(layers=2, size=256)
            push_image(client, "lib/kill", image, f"keep{number}")
            live.append(image)
        for _number in range(60):
            image = Image.random(layers=1, size=256)
            push_image(client, "lib/kill", image)
            assert client.delete(f"/v2/lib/kill/manifests/{image.digest}").status_code == 202
            doomed.append(image)
        expected_live = {sha256(blob) for image in live for blob in image.blobs}

        with subprocess.Popen(
            gc_command(own_server, "--grace", "0s", "--batch-size", "1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**gc_env(), "PYTHONUNBUFFERED": "1"},
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("deleted 1 of"):
                    process.send_signal(signal.SIGKILL)
                    break
            process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL

        left = stored_digests(own_server)
        assert left > expected_live, "the collection was meant to be killed before it finished"
        for number in range(len(live)):
            assert pulls(client, "lib/kill", f"keep{number}")

        # Invariant 4 after a crash: a dry run names exactly what the run then deletes, the
        # killed run's journal (rows gone, bytes maybe not) included, in blobs and bytes.
        dry = run_gc(own_server, "--grace", "0s", "--dry-run").stdout
        would = re.search(r"would delete (\d+) manifests and (\d+) blobs \(([^)]*)\)", dry)
        assert would is not None, dry
        real = run_gc(own_server, "--grace", "0s").stdout
        did = re.search(r"deleted (\d+) manifests and (\d+) blobs, freed (.*) in", real)
        assert did is not None, real
        assert did.groups() == would.groups(), (dry, real)
        # Journalled blobs whose bytes the killed run did delete are named by neither.
        # (A filesystem delete killed between a file and its directory leaves a directory
        # that a listing still names: the run finishes it, uncounted, and says so.)
        finishing = set(re.findall(r"^blob delete to finish: (sha256:[0-9a-f]{64})", dry, re.M))
        assert eligible(dry) <= left and not eligible(dry) & finishing
        assert (eligible(dry) | finishing) & left == left - stored_digests(own_server)
        assert stored_digests(own_server) == expected_live
        for number in range(len(live)):
            assert pulls(client, "lib/kill", f"keep{number}")

        # The killed run is closed by the next one, which knows (holding the lock) that it
        # cannot still be going.
        runs = client.get("/api/v0/admin/settings/registry/garbageCollection/history").json()["runs"]
        assert [(run["status"], run["dryRun"]) for run in runs][:3] == [
            ("done", False),
            ("done", True),
            ("failed", False),
        ], runs
        assert runs[2]["reason"].startswith("interrupted: its process ended"), runs
