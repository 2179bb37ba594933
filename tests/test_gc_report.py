"""What a garbage collection says about itself beyond what it freed: the blobs only the grace
period kept (and when they become collectable), and what a dry run would free, in the CLI's
summary, a registryGC job's result and log, and the history; lastSavings whatever came after."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from wharf.config import load_settings
from wharf.meta import schema as s
from wharf.services.gc import GCOptions
from wharf.services.gc_report import grace_text, minute_after
from wharf.wiring import build_registry

from .gc import engine, run_gc, stored_digests
from .oci import Image, push_image, sha256

pytestmark = pytest.mark.slow

GC = "/api/v0/admin/settings/registry/garbageCollection"
KEPT = re.compile(
    r"^(\d+) blobs \(([\d.]+ (?:B|KiB|MiB))\) kept: pushed within the grace period \((\w+)\); "
    r"collectable after (\d{4}-\d\d-\d\d \d\d:\d\d) UTC, or (.+)$",
    re.M,
)


def last_seen(server, digests: set[str]) -> datetime:
    """The latest time the registry saw any of these blobs, read from its database."""
    db = engine(server)
    try:
        with db.connect() as conn:
            seen = conn.scalars(sa.select(s.blobs.c.last_seen_at).where(s.blobs.c.digest.in_(digests)))
            return max(moment if moment.tzinfo else moment.replace(tzinfo=UTC) for moment in seen)
    finally:
        db.dispose()


def wait_for_job(client, job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while True:
        job = client.get(f"/api/v0/jobs/{job_id}").json()
        if job["status"] in ("done", "errors", "stopped"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def gc_job(client, **parameters: object) -> dict:
    response = client.post("/api/v0/admin/jobs", json={"job": "registryGC", "parameters": parameters})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "done", job
    return job


def test_grace_and_times_are_written_as_a_user_writes_them():
    assert [grace_text(x) for x in (86400, 5400, 90, 45, 0.5)] == ["24h", "90m", "90s", "45s", "0.5s"]
    moment = datetime(2026, 12, 2, 14, 4, 1, tzinfo=UTC)
    assert minute_after(moment) == datetime(2026, 12, 2, 14, 5, tzinfo=UTC)
    assert minute_after(moment.replace(second=0)) == moment.replace(second=0)


def test_a_run_within_the_grace_period_says_what_it_kept_and_until_when(own_server):
    keep, drop = Image.random(), Image.random()
    with own_server.client() as client:
        push_image(client, "lib/young", keep, "keep")
        push_image(client, "lib/young", drop, "drop")
        assert client.delete(f"/v2/lib/young/manifests/{drop.digest}").status_code == 202
    dropped = {sha256(blob) for blob in drop.blobs}
    due = last_seen(own_server, dropped) + timedelta(hours=24)

    result = run_gc(own_server)  # the default grace period, 24h

    assert "deleted 0 manifests and 0 blobs" in result.stdout
    (found,) = KEPT.findall(result.stdout)
    count, size, grace, after, how = found
    assert (int(count), grace, how) == (3, "24h", "run with --grace 0s")
    assert size == f"{sum(len(blob) for blob in drop.blobs) / 1024:.1f} KiB"
    collectable = datetime.strptime(after, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert due <= collectable < due + timedelta(minutes=1)
    assert dropped <= stored_digests(own_server)

    # Taken at its word: with no grace period, the kept ones go, and nothing is kept.
    again = run_gc(own_server, "--grace", "0s")
    assert "deleted 0 manifests and 3 blobs" in again.stdout
    assert KEPT.findall(again.stdout) == []
    assert stored_digests(own_server) == {sha256(blob) for blob in keep.blobs}


def test_blobs_of_an_untagged_manifest_pushed_within_the_grace_period_count_as_kept_by_it(own_server):
    image = Image.random(layers=1)
    with own_server.client() as client:
        push_image(client, "lib/untagged", image)  # by digest: only the grace period keeps it

    result = run_gc(own_server, "--delete-untagged", "--grace", "1h")

    (found,) = KEPT.findall(result.stdout)
    assert (found[0], found[2]) == ("2", "1h")
    assert "0 manifests eligible for deletion" in result.stdout
    result = run_gc(own_server, "--delete-untagged", "--grace", "0s")
    assert "deleted 1 manifests and 2 blobs" in result.stdout


def test_a_job_and_the_history_carry_what_was_kept_and_what_a_dry_run_would_free(make_server):
    server = make_server({"jobs": {"poll": "0.2s"}})  # the default grace period, 24h
    image = Image.random()
    size = sum(len(blob) for blob in image.blobs)
    with server.client() as client:
        push_image(client, "lib/report", image, "v1")
        assert client.delete(f"/v2/lib/report/manifests/{image.digest}").status_code == 202
        due = last_seen(server, {sha256(blob) for blob in image.blobs}) + timedelta(hours=24)

        kept = gc_job(client)
        result = kept["result"]
        assert (result["blobsDeleted"], result["wouldFree"]) == (0, None)
        assert result["keptByGrace"]["blobs"] == 3 and result["keptByGrace"]["bytes"] == size
        collectable = datetime.fromisoformat(result["keptByGrace"]["collectableAfter"])
        assert due <= collectable < due + timedelta(minutes=1)
        logs = client.get(f"/api/v0/jobs/{kept['id']}/logs").json()["logs"]
        assert any(
            f"3 blobs ({size / 1024:.1f} KiB) kept: pushed within the grace period (24h); collectable after"
            in entry["line"]
            and entry["line"].endswith('or start a registryGC job with "graceSeconds": 0')
            for entry in logs
        ), logs

        dry = gc_job(client, dryRun=True, graceSeconds=0)["result"]
        assert dry["wouldFree"] == {"blobs": 3, "manifests": 0, "bytes": size}
        assert dry["blobsDeleted"] == 0 and dry["keptByGrace"]["blobs"] == 0
        assert len(stored_digests(server)) == 3

        newest, oldest = client.get(f"{GC}/history").json()["runs"]
        assert newest["dryRun"] and newest["wouldFree"] == dry["wouldFree"]
        assert newest["bytesEligible"] == size
        assert oldest["wouldFree"] is None and oldest["graceSeconds"] == 86400
        assert oldest["keptByGrace"] == result["keptByGrace"]


def test_last_savings_is_the_last_real_run_however_many_dry_runs_came_after(own_server):
    image = Image.random()
    with own_server.client() as client:
        push_image(client, "lib/savings", image, "v1")
        assert client.delete(f"/v2/lib/savings/manifests/{image.digest}").status_code == 202
        run_gc(own_server, "--grace", "0s")

    async def dry_runs(count: int) -> None:
        registry = build_registry(load_settings(str(own_server.config_path)))
        try:
            for _ in range(count):
                await registry.gc.run(GCOptions(dry_run=True, grace=timedelta(0)))
        finally:
            await registry.close()

    asyncio.run(dry_runs(60))
    with own_server.client() as client:
        runs = client.get(f"{GC}/history", params={"limit": 100}).json()["runs"]
        assert [run["dryRun"] for run in runs] == [True] * 60 + [False]
        savings = client.get(f"{GC}/lastSavings")
        assert savings.status_code == 200, savings.text
        assert savings.json()["id"] == runs[-1]["id"]
        assert savings.json()["blobsDeleted"] == 3
        assert savings.json()["bytesFreed"] == sum(len(blob) for blob in image.blobs)
