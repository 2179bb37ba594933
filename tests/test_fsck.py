"""`wharf fsck` against a real `wharf serve` on both stacks: what it finds (rows without
bytes, naming the images they break; leaks with their age; missing references), its exit
status, what `--repair` deletes and what it must never delete, and the `fsck` job."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from wharf.config import load_settings
from wharf.meta import schema as s
from wharf.meta.clock import now
from wharf.meta.sql import SQLMetadataStore
from wharf.services.fsck import Checker, FsckOptions
from wharf.services.gc import IMPORTING
from wharf.wiring import build_registry, build_storage

from .callers import ADMIN
from .gc import blob_rows, engine, gc_env, run_gc, run_on_a_terminal, store_file, stored
from .oci import OCI_INDEX, Image, index, push_blob, push_image, push_manifest, sha256
from .server import WharfServer

# Fixtures: the services over PostgreSQL and S3 reached through the fault proxy.
from .test_s3_faults import proxy, registry  # noqa: F401

pytestmark = pytest.mark.slow

LEAK = re.compile(r"^leak: (sha256:[0-9a-f]{64}) \((\d+) B, (\d+)s old\)", re.M)


def fsck_command(server: WharfServer, *args: str) -> list[str]:
    return [sys.executable, "-m", "wharf", "fsck", *args, str(server.config_path)]


def run_fsck(server: WharfServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fsck_command(server, *args), capture_output=True, text=True, env=gc_env(), timeout=300
    )


def delete_bytes(server: WharfServer, digest: str) -> None:
    """Behind Wharf's back: the row stays, the bytes go (a lost disk, a bucket rule)."""
    store = build_storage(load_settings(str(server.config_path)))
    assert asyncio.run(store.delete(digest))


def with_store(server: WharfServer, work: Any) -> Any:
    async def run() -> Any:
        store = SQLMetadataStore(server.database_url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def test_a_clean_registry_has_no_problems(own_server):
    image = Image.random()
    with own_server.client() as client:
        push_image(client, "lib/clean", image, "v1")
        push_manifest(client, "lib/clean", "multi", index([image]), OCI_INDEX)
    # A manifest's payload as a Distribution directory keeps it: adopted, not leaked.
    store_file(own_server, image.manifest, image.digest)

    result = run_fsck(own_server)

    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.rstrip().endswith("no problems found"), result.stdout
    assert "checked 3 blob rows, 2 manifests and 4 files on storage" in result.stdout
    assert "leak" not in result.stdout


def test_a_file_without_a_row_is_a_leak_that_repair_deletes_once_past_the_grace_period(own_server):
    image = Image.random()
    with own_server.client() as client:
        push_image(client, "lib/leaky", image, "v1")
    leaked = os.urandom(100)
    store_file(own_server, leaked, sha256(leaked))

    found = run_fsck(own_server)
    assert found.returncode == 0, found.stderr + found.stdout
    leaks = LEAK.findall(found.stdout)
    assert [(digest, size) for digest, size, _age in leaks] == [(sha256(leaked), "100")], found.stdout
    assert int(leaks[0][2]) < 600  # its age: stored a moment ago
    assert "no problems found, but 1 leaks" in found.stdout

    kept = run_fsck(own_server, "--repair")  # the default grace period, 24h
    assert kept.returncode == 0, kept.stderr + kept.stdout
    assert "repair: kept 1 leaks younger than the grace period (24h)" in kept.stdout
    assert stored(own_server, sha256(leaked))

    repaired = run_fsck(own_server, "--repair", "--grace", "0s")
    assert repaired.returncode == 0, repaired.stderr + repaired.stdout
    assert f"repair: deleted leak {sha256(leaked)} (100 B)" in repaired.stdout
    assert not stored(own_server, sha256(leaked))
    assert all(stored(own_server, sha256(blob)) for blob in image.blobs)
    after = run_fsck(own_server)
    assert after.returncode == 0 and after.stdout.rstrip().endswith("no problems found"), after.stdout


def test_a_row_whose_bytes_are_gone_is_a_broken_image_named_with_its_tags(own_server):
    image, other = Image.random(), Image.random()
    with own_server.client() as client:
        push_image(client, "lib/app", image, "v1")
        push_manifest(client, "lib/app", "multi", index([image]), OCI_INDEX)
        push_image(client, "lib/other", other, "v1")  # unharmed
    layer = sha256(image.layers[0])
    delete_bytes(own_server, layer)

    result = run_fsck(own_server)

    assert result.returncode == 1, result.stderr + result.stdout
    out = result.stdout
    assert f"row without bytes: blob {layer} (1.0 KiB) is missing from storage" in out, out
    assert f"  breaks lib/app@{image.digest} (tags: v1)\n" in out
    assert f"  breaks lib/app@{sha256(index([image]))} (tags: multi), an index listing {image.digest}" in out
    assert "  linked into lib/app" in out
    assert "lib/other" not in out
    assert "1 problems found: 1 blob rows without their bytes (breaking 2 manifests)" in out


def test_an_index_missing_a_child_and_a_tag_missing_its_manifest_are_reported(own_server):
    amd, arm = Image.random(), Image.random()
    payload = index([amd, arm])
    with own_server.client() as client:
        push_image(client, "lib/multi", amd)
        push_image(client, "lib/multi", arm)
        push_manifest(client, "lib/multi", "latest", payload, OCI_INDEX)
        # Deleting a child by digest is allowed (as in Distribution): the index is broken.
        assert client.delete(f"/v2/lib/multi/manifests/{arm.digest}").status_code == 202
    db = engine(own_server)
    try:
        with db.begin() as conn:  # a tag no manifest answers (no API can make one)
            repo_id = conn.scalar(sa.select(s.repositories.c.id).where(s.repositories.c.name == "lib/multi"))
            ghost = sha256(b"no such manifest")
            conn.execute(
                s.tags.insert().values(repository_id=repo_id, name="ghost", digest=ghost, updated_at=now())
            )
    finally:
        db.dispose()

    result = run_fsck(own_server)

    assert result.returncode == 1, result.stderr + result.stdout
    assert (
        f"missing reference: lib/multi@{sha256(payload)} (tags: latest) names child manifest {arm.digest}, "
        "which the repository does not hold" in result.stdout
    ), result.stdout
    assert f"missing reference: tag lib/multi:ghost points at manifest {ghost}" in result.stdout
    assert "2 problems found" in result.stdout


def test_repair_forgets_the_journal_entries_of_the_leaks_it_deletes(own_server):
    leaked = os.urandom(64)
    store_file(own_server, leaked, sha256(leaked))
    db = engine(own_server)
    try:
        with db.begin() as conn:  # a collection killed between its row delete and its bytes
            conn.execute(s.gc_pending.insert().values(digest=sha256(leaked), at=now(), size=64))
    finally:
        db.dispose()

    found = run_fsck(own_server)
    assert f"leak: {sha256(leaked)} (64 B, " in found.stdout
    assert "is on storage and a collection's journal has yet to delete it" in found.stdout

    repaired = run_fsck(own_server, "--repair", "--grace", "0s")
    assert repaired.returncode == 0, repaired.stderr + repaired.stdout
    assert not stored(own_server, sha256(leaked))
    assert with_store(own_server, lambda store: store.gc.pending()) == []


def test_repair_deletes_nothing_while_an_import_is_unfinished(own_server):
    orphan = b"a blob of a repository not imported yet"
    store_file(own_server, orphan, sha256(orphan))
    with_store(own_server, lambda store: store.jobs.put_setting(IMPORTING, {"root": "/srv/registry"}))

    refused = run_fsck(own_server, "--repair", "--grace", "0s")

    assert refused.returncode == 0, refused.stderr + refused.stdout
    assert "repair: an import of /srv/registry has not finished" in refused.stdout
    assert stored(own_server, sha256(orphan))
    with_store(own_server, lambda store: store.jobs.put_setting(IMPORTING, {}))
    assert run_fsck(own_server, "--repair", "--grace", "0s").returncode == 0
    assert not stored(own_server, sha256(orphan))


def test_repair_never_runs_beside_a_garbage_collection(own_server):
    leaked = os.urandom(64)
    store_file(own_server, leaked, sha256(leaked))

    async def holding(store: SQLMetadataStore) -> tuple[subprocess.CompletedProcess[str], ...]:
        async with store.gc_lock() as held:
            assert held
            repair = await asyncio.to_thread(run_fsck, own_server, "--repair", "--grace", "0s")
            check = await asyncio.to_thread(run_fsck, own_server)  # a check alone needs no lock
            return repair, check

    repair, check = with_store(own_server, holding)
    assert repair.returncode == 2, repair.stderr + repair.stdout
    assert "a garbage collection (or an import) is running" in repair.stderr
    assert stored(own_server, sha256(leaked))
    assert check.returncode == 0 and sha256(leaked) in check.stdout


def test_a_leak_pushed_after_the_check_is_kept_by_the_repair(own_server):
    """The leak's blob is pushed (its row recorded) between the check and the deletion: the
    repair reads the rows again inside the digest's section, and keeps it."""
    data = os.urandom(200)
    digest = sha256(data)
    store_file(own_server, data, digest)
    pushed: list[str] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "files" and done == total and not pushed:  # the check has found the leak
            with own_server.client() as client:
                pushed.append(push_blob(client, "lib/late", data))

    async def repair() -> Any:
        wharf = build_registry(load_settings(str(own_server.config_path)))
        try:
            checker = Checker(wharf.meta, wharf.storage)
            return await checker.run(ADMIN, FsckOptions(repair=True, grace=timedelta(0)), progress)
        finally:
            await wharf.close()

    report = asyncio.run(repair())

    assert pushed == [digest]
    assert [leak.digest for leak in report.leaks] == [digest]
    assert report.repair is not None and report.repair.deleted == []
    assert digest in blob_rows(own_server) and stored(own_server, digest)
    with own_server.client() as client:
        assert client.get(f"/v2/lib/late/blobs/{digest}").content == data


def test_a_blob_collected_while_fsck_runs_is_no_broken_image(own_server):
    """A collection deletes a blob's row and bytes after fsck read the rows and before it
    looked at storage: fsck looks again inside the digest's section, and finds no lie."""
    with own_server.client() as client:
        garbage = push_blob(client, "lib/gone", os.urandom(300))  # named by no manifest
        push_image(client, "lib/kept", Image.random(), "v1")
    collected: list[str] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "blobs" and done == 0 and not collected:  # rows read, storage not yet
            collected.append(run_gc(own_server, "--grace", "0s", "--scan-storage").stdout)

    async def check() -> Any:
        wharf = build_registry(load_settings(str(own_server.config_path)))
        try:
            return await Checker(wharf.meta, wharf.storage).run(ADMIN, FsckOptions(), progress)
        finally:
            await wharf.close()

    report = asyncio.run(check())

    assert f"blob eligible for deletion: {garbage}" in collected[0]
    assert not stored(own_server, garbage) and garbage not in blob_rows(own_server)
    assert report.blobs_checked == 4  # the snapshot still had it
    assert report.broken == [] and report.problems == 0


def wait_for(client: Any, job_id: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.get(f"/api/v0/jobs/{job_id}").json()
        if job["status"] in {"done", "errors", "stopped"}:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {seconds} s")


def test_the_fsck_job_logs_its_findings_and_counts_them_in_its_result(own_server):
    image = Image.random()
    leaked = os.urandom(32)
    with own_server.client() as client:
        push_image(client, "lib/job", image, "v1")
        store_file(own_server, leaked, sha256(leaked))
        delete_bytes(own_server, sha256(image.config))

        job = client.post("/api/v0/admin/jobs", json={"job": "fsck"}).json()
        assert job["parameters"] == {"repair": False, "grace": "24h"}, job
        done = wait_for(client, job["id"])
        assert done["status"] == "done", done
        result = done["result"]
        assert result["ok"] is False and result["rowsWithoutBytes"] == 1 and result["brokenImages"] == 1
        assert (result["leaks"], result["leakedBytes"], result["blobsChecked"]) == (1, 32, 3)
        lines = [entry["line"] for entry in client.get(f"/api/v0/jobs/{job['id']}/logs").json()["logs"]]
        assert f"row without bytes: blob {sha256(image.config)} (" in "\n".join(lines), lines
        assert f"  breaks lib/job@{image.digest} (tags: v1)" in lines

        repair = client.post(
            "/api/v0/admin/jobs", json={"job": "fsck", "parameters": {"repair": True, "grace": "0s"}}
        ).json()
        repaired = wait_for(client, repair["id"])
        assert repaired["status"] == "done", repaired
        assert (repaired["result"]["leaksDeleted"], repaired["result"]["bytesFreed"]) == (1, 32)
        assert not stored(own_server, sha256(leaked))

        bad = client.post("/api/v0/admin/jobs", json={"job": "fsck", "parameters": {"grace": "soon"}})
        assert bad.status_code == 400 and "parameters.grace" in bad.json()["errors"][0]["message"]


def test_help_says_where_it_looks_without_a_config():
    result = subprocess.run(
        [sys.executable, "-m", "wharf", "fsck", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "./data/wharf.db" in result.stdout and "under ./data" in result.stdout
    assert "Exit status" in result.stdout


def test_progress_shows_on_a_terminal_and_stays_out_of_pipes(make_server):

    server = make_server()
    with server.client() as client:
        for _number in range(20):
            push_image(client, "lib/bar", Image.random(layers=1, size=64))
    piped = run_fsck(server)
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout + piped.stderr

    result, shown = run_on_a_terminal(fsck_command(server))
    assert result.returncode == 0 and "\x1b[" not in result.stdout
    assert b"blobs" in shown and b"\x1b[" in shown, shown[-500:]


async def test_a_leak_whose_delete_fails_is_not_counted_and_stays_journalled(registry, proxy):  # noqa: F811
    """On S3 through the fault proxy: DeleteObjects fails the leak's key, so the repair counts
    nothing freed and keeps its journal entry; the next repair deletes it and forgets it."""
    from datetime import UTC, datetime

    from .test_s3_faults import bucket

    data = os.urandom(500)
    digest = sha256(data)

    async def chunks() -> Any:
        yield data

    async def accept(_size: int, publish: Any) -> None:
        await publish()

    await bucket(registry).store_blob(digest, chunks(), lambda _chunk: None, accept)
    await registry.meta.blobs.link("lib/journal", digest, len(data))
    # A collection deleted the row and was killed before the bytes: journalled, a leak.
    assert await registry.meta.gc.delete_blobs([digest], datetime.now(UTC) + timedelta(hours=1))
    rule = proxy.fail_deletes(digest.split(":")[1])
    checker = Checker(registry.meta, registry.storage)

    report = await checker.run(ADMIN, FsckOptions(repair=True, grace=timedelta(0)))

    assert rule.hits == 1
    assert [leak.digest for leak in report.leaks] == [digest] and report.leaks[0].journalled
    assert report.repair is not None and report.repair.deleted == []
    assert [leak.digest for leak in report.repair.failed] == [digest]
    assert report.result()["leaksNotDeleted"] == 1 and report.result()["bytesFreed"] == 0
    assert await bucket(registry).stat(digest) == len(data)
    assert [d for d, _size in await registry.meta.gc.pending()] == [digest]

    rule.remove()
    again = await checker.run(ADMIN, FsckOptions(repair=True, grace=timedelta(0)))
    assert again.repair is not None and [leak.digest for leak in again.repair.deleted] == [digest]
    assert await bucket(registry).stat(digest) is None
    assert await registry.meta.gc.pending() == []
