"""Prometheus metrics at /metrics, scraped from a real `wharf serve`: HTTP by route template,
garbage collection totals read from the database, job durations and failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from wharf.meta.gc import GCRun
from wharf.meta.sql import SQLMetadataStore
from wharf.oci.router import ROUTES

from .gc import run_gc
from .oci import Image, push_image, sha256
from .server import WharfServer

Labels = tuple[tuple[str, str], ...]
TEMPLATES = {template for _pattern, template, _handlers in ROUTES} | {
    "/v2/",
    "/v2/{path}",
    "/metrics",
    "/healthz",
    "/readyz",
    "unmatched",
}


def scrape(client: httpx.Client) -> dict[tuple[str, Labels], float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def http(samples: dict[tuple[str, Labels], float], name: str, route: str, method: str, status: int) -> float:
    return value(samples, name, route=route, method=method, status=str(status))


def test_requests_are_counted_by_route_template_method_and_status(own_server: WharfServer, repo: str):
    image = Image.random(layers=1, size=3000)
    with own_server.client() as client:
        push_image(client, repo, image, tag="v1")
        assert client.get(f"/v2/{repo}/manifests/v1").status_code == 200
        layer = image.layers[0]
        pulled = client.get(f"/v2/{repo}/blobs/{Image.random().digest}")
        assert pulled.status_code == 404
        pulled = client.get(f"/v2/{repo}/blobs/{sha256(layer)}")
        assert pulled.content == layer
        assert client.get(f"/v2/{repo}/manifests/missing").status_code == 404
        assert client.patch("/v2/_catalog").status_code == 405
        assert client.get("/api/v0/jobs/no-such-job").status_code == 404
        assert client.get("/api/v0/no/such/endpoint").status_code == 404
        assert client.get(f"/not/{repo}").status_code == 404

        samples = scrape(client)

    requests = "wharf_http_requests_total"
    blob = "/v2/{name}/blobs/{digest}"
    manifest = "/v2/{name}/manifests/{reference}"
    assert http(samples, requests, "/v2/{name}/blobs/uploads/", "POST", 201) == 2  # config and layer
    assert http(samples, requests, manifest, "PUT", 201) == 1
    assert http(samples, requests, manifest, "GET", 200) == 1
    assert http(samples, requests, manifest, "GET", 404) == 1
    assert http(samples, requests, blob, "GET", 200) == 1
    assert http(samples, requests, blob, "GET", 404) == 1
    assert http(samples, requests, "/v2/_catalog", "PATCH", 405) == 1
    assert http(samples, requests, "/api/v0/jobs/{job_id}", "GET", 404) == 1
    assert http(samples, requests, "/api/v0/{path}", "GET", 404) == 1
    assert http(samples, requests, "unmatched", "GET", 404) == 1
    # The blob GET sent the layer; the manifest GET its payload.
    assert http(samples, "wharf_http_response_bytes_total", blob, "GET", 200) == len(layer)
    assert http(samples, "wharf_http_response_bytes_total", manifest, "GET", 200) == len(image.manifest)
    assert value(samples, "wharf_http_request_duration_seconds_count", route=blob, method="GET") == 2
    assert (
        value(samples, "wharf_http_request_duration_seconds_bucket", route=blob, method="GET", le="+Inf") == 2
    )
    assert value(samples, "wharf_http_request_duration_seconds_sum", route=blob, method="GET") > 0

    # Bounded label values: templates only, never a repository name or a digest.
    routes = {dict(labels)["route"] for name, labels in samples if name.startswith("wharf_http_")}
    assert routes <= TEMPLATES | {"/api/v0/jobs/{job_id}", "/api/v0/{path}"}, routes
    assert not any(repo in str(labels) for _name, labels in samples)


def test_openmetrics_is_served_to_scrapers_that_ask_for_it(own_server: WharfServer):
    with own_server.client() as client:
        client.get("/healthz")
        response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {family.name: family for family in openmetrics_families(response.text)}
    healthz = [s for s in families["wharf_http_requests"].samples if s.labels["route"] == "/healthz"]
    assert [s.value for s in healthz if s.name == "wharf_http_requests_total"] == [1]
    assert families["wharf_gc_runs"].type == "counter"


def wait_for_job(
    client: httpx.Client, job_id: str, statuses: set[str], seconds: float = 60
) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        job = client.get(f"/api/v0/jobs/{job_id}").json()
        if job["status"] in statuses:
            return dict(job)
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.1)


def test_gc_runs_and_what_they_freed_are_read_from_the_database(own_server: WharfServer, repo: str):
    image = Image.random(layers=2, size=2000)
    untagged = Image.random(layers=1, size=500)
    with own_server.client() as client:
        push_image(client, repo, image)
        push_image(client, repo, untagged)  # by digest: --delete-untagged collects it, manifest and all
        before = scrape(client)
        assert value(before, "wharf_gc_runs_total", status="done", dry_run="false") == 0
        assert value(before, "wharf_gc_bytes_freed_total") == 0
        assert ("wharf_gc_last_success_timestamp_seconds", ()) not in before

        assert client.delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202
        # A dry run by the command line (another process): counted, frees nothing.
        run_gc(own_server, "--grace", "0s", "--dry-run")
        dry = scrape(client)
        assert value(dry, "wharf_gc_runs_total", status="done", dry_run="true") == 1
        assert value(dry, "wharf_gc_bytes_freed_total") == 0

        # The real one as a job of the server's worker.
        started = datetime.now(UTC)
        parameters = {"graceSeconds": 0, "deleteUntagged": True}
        job = client.post("/api/v0/admin/jobs", json={"job": "registryGC", "parameters": parameters})
        assert job.status_code == 202, job.text
        done = wait_for_job(client, job.json()["id"], {"done", "errors", "stopped"})
        assert done["status"] == "done", done
        after = scrape(client)

    assert value(after, "wharf_gc_runs_total", status="done", dry_run="false") == 1
    assert value(after, "wharf_gc_runs_total", status="done", dry_run="true") == 1
    assert value(after, "wharf_gc_blobs_deleted_total") == 5
    assert value(after, "wharf_gc_manifests_deleted_total") == 1
    freed = sum(len(blob) for blob in image.blobs + untagged.blobs)
    assert value(after, "wharf_gc_bytes_freed_total") == freed
    last = value(after, "wharf_gc_last_success_timestamp_seconds")
    assert started.timestamp() - 1 <= last <= time.time() + 1
    # The job's attempt, observed by the worker that ran it.
    assert value(after, "wharf_job_duration_seconds_count", action="registryGC", outcome="done") == 1
    assert value(after, "wharf_job_failures_total", action="registryGC") == 0


async def test_a_failed_job_attempt_is_counted(own_server: WharfServer, tmp_path: Path):
    """A job whose attempt fails (here an import of a directory that is not the storage root) counts."""
    async with httpx.AsyncClient(base_url=own_server.url, timeout=30) as client:
        missing = str(tmp_path / "no-such-directory")
        response = await client.post(
            "/api/v0/admin/jobs", json={"job": "metadatastoremigration", "parameters": {"root": missing}}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.monotonic() + 120
        while True:
            samples = text_string_to_metric_families((await client.get("/metrics")).text)
            failures = {
                s.labels["action"]: s.value
                for family in samples
                for s in family.samples
                if s.name == "wharf_job_failures_total"
            }
            if failures.get("metadatastoremigration"):
                break
            assert time.monotonic() < deadline, "no failure counted"
            await asyncio.sleep(0.1)
        assert failures == {"metadatastoremigration": 1}
        job = (await client.get(f"/api/v0/jobs/{job_id}")).json()
        assert job["status"] == "errors" and job["attempts"] == 1, job


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SQLMetadataStore]:
    instance = SQLMetadataStore(database_url)
    yield instance
    await instance.close()


async def test_gc_totals_add_up_runs_by_status_and_dry_run(store: SQLMetadataStore):
    start = datetime(2024, 5, 1, tzinfo=UTC)

    def run(status: str, dry: bool, blobs: int, freed: int, hours: int) -> GCRun:
        return GCRun(
            started_at=start + timedelta(hours=hours),
            ended_at=None if status == "running" else start + timedelta(hours=hours, minutes=5),
            dry_run=dry,
            delete_untagged=False,
            mode="online",
            grace_seconds=0,
            status=status,
            blobs_deleted=blobs,
            manifests_deleted=blobs // 2,
            bytes_freed=freed,
        )

    assert await store.gc.totals() == []
    for item in [
        run("done", False, 4, 400, 0),
        run("done", False, 6, 600, 2),
        run("stopped", False, 1, 100, 3),
        run("done", True, 0, 0, 4),
        run("running", False, 2, 20, 5),
    ]:
        await store.gc.save_run(item)
    totals = sorted(
        (t.status, t.dry_run, t.runs, t.blobs_deleted, t.manifests_deleted, t.bytes_freed, t.last_ended_at)
        for t in await store.gc.totals()
    )
    assert totals == [
        ("done", False, 2, 10, 5, 1000, start + timedelta(hours=2, minutes=5)),
        ("done", True, 1, 0, 0, 0, start + timedelta(hours=4, minutes=5)),
        ("running", False, 1, 2, 1, 20, None),
        ("stopped", False, 1, 1, 0, 100, start + timedelta(hours=3, minutes=5)),
    ]


def test_with_several_workers_any_of_them_reports_all_requests(make_server):
    server = make_server({"http": {"workers": 2}, "jobs": {"enabled": False}})
    for _ in range(30):  # a connection each: the workers share them out
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    counts = set()
    for _ in range(6):
        with server.client() as client:
            counts.add(http(scrape(client), "wharf_http_requests_total", "/healthz", "GET", 200))
    assert counts == {30}
