"""purgeUploads: abandoned uploads (rows and staged bytes), staged bytes no row knows, and
stale multipart uploads left in the bucket go; uploads in use stay. Against a real `wharf
serve` on both stacks, and the periodic purge fired once across replicas."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import sqlalchemy as sa

from wharf.config import load_settings
from wharf.meta import schema as s
from wharf.meta.sql import SQLMetadataStore
from wharf.services.access import AccessService
from wharf.services.job_parameters import PURGE_UPLOADS
from wharf.services.registry import Registry
from wharf.services.schedules import Periodic, ScheduleService
from wharf.wiring import build_storage

from .callers import ANYONE
from .conftest import stack_config
from .gc import engine
from .oci import error_codes, sha256
from .server import WharfServer, deep_merge
from .test_gc_invariants import body, registry
from .test_jobs import wait_for

__all__ = ["registry"]  # the fixture, shared with test_gc_invariants

ENDED = {"done", "errors", "stopped"}
AGE = 10  # seconds: the age of the multipart uploads taken for stale


def start_upload(client: httpx.Client, repo: str, data: bytes) -> tuple[str, str]:
    """(upload id, location) of an upload holding ``data``."""
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    patched = client.patch(
        started.headers["location"],
        content=data,
        headers={"Content-Range": f"0-{len(data) - 1}", "Content-Type": "application/octet-stream"},
    )
    assert patched.status_code == 202, patched.text
    return started.headers["docker-upload-uuid"], patched.headers["location"]


def set_written(server: WharfServer, upload_id: str, when: datetime) -> None:
    """When a request last wrote to the upload, as its row says."""
    db = engine(server)
    try:
        with db.begin() as conn:
            conn.execute(s.uploads.update().where(s.uploads.c.id == upload_id).values(updated_at=when))
    finally:
        db.dispose()


def upload_rows(server: WharfServer) -> set[str]:
    db = engine(server)
    try:
        with db.connect() as conn:
            return set(conn.scalars(sa.select(s.uploads.c.id)))
    finally:
        db.dispose()


def staged(server: WharfServer) -> dict[str, int]:
    """Upload data on the registry's storage, asked of the storage itself: id -> bytes."""
    store = build_storage(load_settings(str(server.config_path)))

    async def listing() -> dict[str, int]:
        return {item.id: item.size async for item in store.list_uploads()}

    return asyncio.run(listing())


def stage_without_row(server: WharfServer, data: bytes) -> str:
    """Upload data with no row: what a crash between deleting the row and the bytes leaves."""
    store = build_storage(load_settings(str(server.config_path)))
    upload_id = str(uuid.uuid4())

    async def body() -> AsyncIterator[bytes]:
        yield data

    async def stage() -> None:
        await store.create_upload(upload_id)
        await store.append_upload(upload_id, 0, body())

    asyncio.run(stage())
    return upload_id


def purge(client: httpx.Client, **parameters: Any) -> dict[str, Any]:
    response = client.post("/api/v0/admin/jobs", json={"job": PURGE_UPLOADS, "parameters": parameters})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"], ENDED)
    assert job["status"] == "done", job
    return job


def log_lines(client: httpx.Client, job_id: str) -> list[str]:
    return [entry["line"] for entry in client.get(f"/api/v0/jobs/{job_id}/logs").json()["logs"]]


def test_purge_deletes_abandoned_uploads_after_a_dry_run_and_leaves_a_fresh_one_working(own_server):
    old_data, orphan_data, fresh_data = os.urandom(3000), os.urandom(700), os.urandom(5000)
    with own_server.client() as client:
        old_id, old_location = start_upload(client, "lib/purge", old_data)
        fresh_id, fresh_location = start_upload(client, "lib/purge", fresh_data[:2000])
        orphan_id = stage_without_row(own_server, orphan_data)
        set_written(own_server, old_id, datetime.now(UTC) - timedelta(hours=2))
        # The fresh upload is written to "now" whenever the job looks: its row says later.
        set_written(own_server, fresh_id, datetime.now(UTC) + timedelta(hours=1))
        time.sleep(1.5)  # the row-less staged data becomes older than the age asked for

        dry = purge(client, age="1s", dryRun=True)
        assert dry["result"] == {
            "uploadsPurged": 2,
            "bytesFreed": len(old_data) + len(orphan_data),
            "multipartAborted": 0,
            "dryRun": True,
        }
        lines = log_lines(client, dry["id"])
        assert any(f"would purge upload {old_id} in lib/purge: 3000 bytes" in line for line in lines), lines
        assert any(f"would purge staged data of upload {orphan_id}" in line for line in lines), lines
        assert upload_rows(own_server) == {old_id, fresh_id}
        assert staged(own_server) == {old_id: 3000, fresh_id: 2000, orphan_id: 700}

        real = purge(client, age="1s")
        assert real["result"] == {**dry["result"], "dryRun": False}
        assert any(f"purged upload {old_id}" in line for line in log_lines(client, real["id"]))
        assert upload_rows(own_server) == {fresh_id}
        assert staged(own_server) == {fresh_id: 2000}

        gone = client.patch(
            old_location,
            content=b"more",
            headers={"Content-Range": "3000-3003", "Content-Type": "application/octet-stream"},
        )
        assert gone.status_code == 404 and error_codes(gone) == ["BLOB_UPLOAD_UNKNOWN"]

        digest = sha256(fresh_data)
        finished = client.put(fresh_location, params={"digest": digest}, content=fresh_data[2000:])
        assert finished.status_code == 201, finished.text
        assert client.get(f"/v2/lib/purge/blobs/{digest}").content == fresh_data


def test_stale_multipart_uploads_that_no_upload_knows_are_aborted_on_s3(request, make_server):
    with stack_config(request, "postgresql+s3") as config:
        server = make_server(deep_merge(config, {"jobs": {"poll": "0.2s"}}))
        s3 = config["storage"]["s3"]
        bucket, root = s3["bucket"], s3["rootdirectory"]
        client = boto3.client(
            "s3",
            endpoint_url=s3["regionendpoint"],
            aws_access_key_id=s3["accesskey"],
            aws_secret_access_key=s3["secretkey"],
            region_name=s3["region"],
        )

        def begin(key: str, size: int) -> str:
            multipart = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            client.upload_part(
                Bucket=bucket, Key=key, UploadId=multipart, PartNumber=1, Body=os.urandom(size)
            )
            return key

        def pending() -> set[str]:
            listed = client.list_multipart_uploads(Bucket=bucket, Prefix=f"{root}/")
            return {item["Key"] for item in listed.get("Uploads", [])}

        with server.client() as http:
            live_id, _location = start_upload(http, "lib/multipart", b"live")
            set_written(server, live_id, datetime.now(UTC) + timedelta(hours=1))
            hex_ = os.urandom(32).hex()
            # A streamed push cut short leaves its blob key's multipart upload behind; so could
            # an upload's own prefix. One under a live upload's prefix is that upload's.
            stale = {
                begin(f"{root}/wharf/uploads/{uuid.uuid4()}/data", 1000),
                begin(f"{root}/docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data", 2000),
            }
            known = begin(f"{root}/wharf/uploads/{live_id}/data", 300)
            # S3 dates a multipart upload itself (no clock to set): the stale ones must age
            # past ``age``, and the fresh one stay younger until the job has looked, which
            # on a busy machine takes seconds.
            time.sleep(AGE + 0.5)
            fresh = begin(f"{root}/docker/registry/v2/blobs/sha256/ab/ab{hex_[2:]}/data", 400)
            assert pending() == stale | {known, fresh}

            job = purge(http, age=f"{AGE}s")
            assert job["result"] == {
                "uploadsPurged": 0,
                "bytesFreed": 3000,
                "multipartAborted": 2,
                "dryRun": False,
            }
            assert pending() == {known, fresh}
            assert sum("aborted multipart upload of" in line for line in log_lines(http, job["id"])) == 2


async def test_the_periodic_purge_is_created_once_per_interval_across_runners(database_url):
    stores = [SQLMetadataStore(database_url) for _ in range(2)]
    every = timedelta(hours=24)
    window = timedelta(seconds=10)
    try:

        def replica(store: SQLMetadataStore) -> ScheduleService:
            periodic = [Periodic("uploadPurging", PURGE_UPLOADS, every, {"age": "168h"})]
            return ScheduleService(
                store.jobs,
                timedelta(hours=24),
                periodic,
                access=AccessService(store.accounts),
                events=store.events,
            )

        replicas = [replica(store) for store in stores]
        now = datetime.now(UTC)
        for _ in range(3):
            await asyncio.gather(*(r.fire(now, window) for r in replicas))
        jobs = await stores[0].jobs.find(PURGE_UPLOADS, None, None, 0, 100)
        assert len(jobs) == 1 and jobs[0].parameters == {"age": "168h"}

        # A replica starting later in the same interval starts nothing either.
        late = replica(stores[1])
        await late.fire(now, window)
        assert len(await stores[0].jobs.find(PURGE_UPLOADS, None, None, 0, 100)) == 1

        # The next interval: one more, whichever replicas ask.
        later = now + every
        fired = await asyncio.gather(*(r.fire_periodic(later) for r in [*replicas, late]))
        assert sum(len(jobs) for jobs in fired) == 1
        assert len(await stores[0].jobs.find(PURGE_UPLOADS, None, None, 0, 100)) == 2
    finally:
        for store in stores:
            await store.close()


def test_wharf_serve_purges_at_its_interval_when_upload_purging_is_enabled(make_server):
    purging = {"enabled": True, "age": "1s", "interval": "1s"}
    server = make_server({"storage": {"maintenance": {"uploadpurging": purging}}, "jobs": {"poll": "0.2s"}})
    with server.client() as client:
        upload_id, location = start_upload(client, "lib/periodic", b"abandoned")
        deadline = time.monotonic() + 30
        while upload_id in upload_rows(server):
            assert time.monotonic() < deadline, "the abandoned upload was never purged"
            time.sleep(0.2)
        assert upload_id not in staged(server)
        gone = client.patch(location, content=b"x", headers={"Content-Type": "application/octet-stream"})
        assert gone.status_code == 404 and error_codes(gone) == ["BLOB_UPLOAD_UNKNOWN"]
        jobs = client.get("/api/v0/jobs", params={"action": PURGE_UPLOADS, "limit": 1000}).json()["jobs"]
        purged = [job for job in jobs if job["status"] == "done" and job["result"]["uploadsPurged"]]
        assert purged and purged[0]["parameters"] == {"age": "1s", "dryRun": False}


def test_purge_parameters_are_checked_when_the_job_is_posted(make_server):
    server = make_server({"jobs": {"enabled": False}})
    with server.client() as client:
        bad_age = client.post(
            "/api/v0/admin/jobs", json={"job": PURGE_UPLOADS, "parameters": {"age": "soon"}}
        )
        assert bad_age.status_code == 400 and error_codes(bad_age) == ["INVALID_JOB"]
        assert "parameters.age" in bad_age.json()["errors"][0]["message"]
        for age in ("9999999999999999d", "999999999d"):  # no overflow, no 500
            huge = client.post("/api/v0/admin/jobs", json={"job": PURGE_UPLOADS, "parameters": {"age": age}})
            assert huge.status_code == 400 and "too long" in huge.json()["errors"][0]["message"], huge.text
        unknown = client.post(
            "/api/v0/admin/jobs", json={"job": PURGE_UPLOADS, "parameters": {"older": "1h"}}
        )
        assert unknown.status_code == 400 and "parameters.older" in unknown.json()["errors"][0]["message"]
        defaults = client.post("/api/v0/admin/jobs", json={"job": PURGE_UPLOADS})
        assert defaults.status_code == 202
        assert defaults.json()["parameters"] == {"age": "168h", "dryRun": False}


async def test_idle_is_measured_by_the_purgers_clock_so_no_test_waits_for_an_upload_to_age(
    registry: Registry,
) -> None:
    """The purger's clock is injected: moved two hours on, an upload just written and staged
    data just left are an hour past ``age``, and go; at the real time they stay."""
    from wharf.services.purge import UploadPurger

    started = await registry.uploads.start(ANYONE, "lib/aged")
    await registry.uploads.append(ANYONE, "lib/aged", started.id, body(b"written just now"))
    orphan = str(uuid.uuid4())
    await registry.storage.create_upload(orphan)
    await registry.storage.append_upload(orphan, 0, body(b"left by a crash"))

    def lines(_line: str, listed: bool = False) -> None:
        pass

    now = UploadPurger(registry.meta.blobs, registry.storage, registry.uploads)
    report = await now.run(timedelta(hours=1), dry_run=False, say=lines)
    assert (report.uploads_purged, report.bytes_freed) == (0, 0)

    later = datetime.now(UTC) + timedelta(hours=2)
    moved = UploadPurger(registry.meta.blobs, registry.storage, registry.uploads, clock=lambda: later)
    report = await moved.run(timedelta(hours=1), dry_run=False, say=lines)
    assert report.cutoff == later - timedelta(hours=1)
    assert (report.uploads_purged, report.bytes_freed) == (
        2,
        len(b"written just now") + len(b"left by a crash"),
    )
    assert await registry.meta.blobs.get_upload(started.id) is None
