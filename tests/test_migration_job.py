"""metadatastoremigration: `wharf import-distribution` as a job of the admin API, with its
progress in the job's log; a root that cannot be imported fails the job, not the worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from wharf.meta.sql import SQLMetadataStore
from wharf.services.job_parameters import METADATA_MIGRATION, PURGE_UPLOADS

from .distribution import Distribution
from .layout import Layout, make_image
from .oci import error_codes
from .test_import import skopeo_copy
from .test_jobs import wait_for
from .test_skopeo import all_digests, assert_layout_holds

ENDED = {"done", "errors", "stopped"}


def migrate(client: httpx.Client, parameters: dict[str, Any] | None) -> httpx.Response:
    return client.post("/api/v0/admin/jobs", json={"job": METADATA_MIGRATION, "parameters": parameters})


def log_lines(client: httpx.Client, job_id: str) -> list[str]:
    return [entry["line"] for entry in client.get(f"/api/v0/jobs/{job_id}/logs").json()["logs"]]


@pytest.mark.slow
def test_metadatastoremigration_adopts_the_distribution_directory_it_serves(
    skopeo, docker_registry, make_server, tmp_path
):
    source = Layout(tmp_path / "source")
    image = make_image()
    source.add_image(image, "v1")
    distribution = Distribution(docker_registry, tmp_path).start()
    try:
        skopeo_copy(skopeo, f"oci:{source.path}:v1", f"docker://{distribution.address}/lib/adopted:v1")
    finally:
        distribution.stop()

    root = distribution.root
    server = make_server({"storage": {"filesystem": {"rootdirectory": str(root)}}, "jobs": {"poll": "0.2s"}})
    with server.client() as client:
        assert client.get("/v2/lib/adopted/manifests/v1").status_code == 404
        started = migrate(client, {"root": str(root)})
        assert started.status_code == 202, started.text
        job = wait_for(client, started.json()["id"], ENDED)
        assert job["status"] == "done", job
        assert job["result"] == {"repositories": 1, "manifests": 1, "tags": 1, "blobs": 3, "skipped": 0}
        lines = log_lines(client, job["id"])
        assert "importing lib/adopted (1 of 1)" in lines, lines
        assert any(line.startswith("imported 1 repositories: 1 manifests, 1 tags") for line in lines), lines
        assert client.get("/v2/lib/adopted/tags/list").json()["tags"] == ["v1"]

    out = tmp_path / "pulled"
    skopeo_copy(skopeo, f"docker://127.0.0.1:{server.port}/lib/adopted:v1", f"oci:{out}:v1")
    assert_layout_holds(out, "v1", image.digest, all_digests(image))


def test_metadatastoremigration_takes_only_the_storage_root_and_fails_cleanly(make_server, tmp_path):
    server = make_server({"jobs": {"poll": "0.2s"}})
    with server.client() as client:
        refused = migrate(client, {"root": ""})
        assert refused.status_code == 400 and error_codes(refused) == ["INVALID_JOB"], refused.text
        assert "parameters.root" in refused.json()["errors"][0]["message"]
        extra = migrate(client, {"root": str(tmp_path), "copy": True})
        assert extra.status_code == 400 and "parameters.copy" in extra.json()["errors"][0]["message"]

        # Any other directory, there or not, gets the same answer: nothing is said about
        # what exists on the worker's host.
        for elsewhere in (tmp_path / "no-such-directory", tmp_path):
            job = wait_for(client, migrate(client, {"root": str(elsewhere)}).json()["id"], ENDED)
            # Not worth retrying: it ends at the first attempt, saying why.
            assert (job["status"], job["attempts"]) == ("errors", 1), job
            assert job["error"].startswith(f"root {elsewhere} is not this registry's storage root"), job
            assert any(line.startswith(f"failed: root {elsewhere}") for line in log_lines(client, job["id"]))

        # Without a root, as DTR starts it: the storage root (here holding no repository).
        job = wait_for(client, migrate(client, None).json()["id"], ENDED)
        assert job["status"] == "done" and job["result"]["repositories"] == 0, job

        # The worker goes on: the next job runs.
        after = client.post("/api/v0/admin/jobs", json={"job": PURGE_UPLOADS}).json()
        assert wait_for(client, after["id"], ENDED)["status"] == "done"


async def test_an_import_waits_for_a_running_collection(make_server):
    """A collection must not see half an import (its storage scan would take the blobs of the
    repositories not imported yet for files no row knows): the import waits for it."""
    server = make_server({"jobs": {"poll": "0.2s"}})
    store = SQLMetadataStore(server.database_url)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            async with store.gc_lock() as held:
                assert held
                job_id = (await client.post("/api/v0/admin/jobs", json={"job": METADATA_MIGRATION})).json()[
                    "id"
                ]
                deadline = time.monotonic() + 120
                while True:
                    lines = [
                        e["line"] for e in (await client.get(f"/api/v0/jobs/{job_id}/logs")).json()["logs"]
                    ]
                    if "a garbage collection is running: waiting for it to end" in lines:
                        break
                    assert time.monotonic() < deadline, lines
                    await asyncio.sleep(0.1)
                assert (await client.get(f"/api/v0/jobs/{job_id}")).json()["status"] == "running"
            while (job := (await client.get(f"/api/v0/jobs/{job_id}")).json())["status"] == "running":
                assert time.monotonic() < deadline + 120, job
                await asyncio.sleep(0.1)
            assert job["status"] == "done" and job["attempts"] == 1, job
    finally:
        await store.close()
