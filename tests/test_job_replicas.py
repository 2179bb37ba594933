"""Jobs across real replicas: two `wharf serve` processes on one database and one blob
store (PostgreSQL + S3, and a shared SQLite file + directory), each running a job worker.

A worker killed mid-collection is taken over by the other replica; a stopping server
hands its running job back at once; jobs created through both replicas each run once.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import STACKS, stack_config
from .gc import stored_digests
from .oci import OCI_MANIFEST, Image, push_blob, push_image, sha256
from .server import WharfServer, deep_merge

TERMINAL = {"done", "errors", "stopped"}
ATTEMPT = re.compile(r"^attempt (\d+) of (\d+) on (\S+)$")

# Unreferenced blobs that make a collection (a blob a batch) last long enough to be
# interrupted mid-sweep: a few seconds on each stack (SQLite deletes some 200 a second).
GARBAGE = {"sqlite+filesystem": 1000, "postgresql+s3": 300}
# Seconds to wait for a job's state: generous, since a busy machine is slow (polled, so a
# quick machine does not wait).
WAIT = 120


@dataclass
class StartReplicas:
    """Starts two replicas sharing the stack's database and blob store, with the given
    ``jobs`` settings: PostgreSQL + S3, or one SQLite file and one directory."""

    stack: str
    config: dict[str, Any]
    make_server: Callable[..., WharfServer]

    def __call__(self, jobs: dict[str, str]) -> tuple[WharfServer, WharfServer]:
        merged = deep_merge(self.config, {"jobs": {"enabled": True, **jobs}})
        return self.make_server(merged), self.make_server(merged)

    @property
    def garbage(self) -> int:
        return GARBAGE[self.stack]


@pytest.fixture(params=STACKS)
def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, make_server: Callable[..., WharfServer]
) -> Iterator[StartReplicas]:
    with stack_config(request, request.param) as config:
        if request.param == "sqlite+filesystem":
            config = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "shared")}}}
        yield StartReplicas(request.param, config, make_server)


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v0/jobs/{job_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def job_log(client: httpx.Client, job_id: str) -> list[str]:
    response = client.get(f"/api/v0/jobs/{job_id}/logs", params={"limit": 10000})
    assert response.status_code == 200, response.text
    return [entry["line"] for entry in response.json()["logs"]]


def wait_until(
    client: httpx.Client, job_id: str, done: Callable[[dict[str, Any], list[str]], bool], seconds: float
) -> tuple[dict[str, Any], list[str]]:
    """Poll the job (and its log) until ``done`` says so; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found, lines = job(client, job_id), job_log(client, job_id)
        if done(found, lines):
            return found, lines
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} after {seconds} s: {found}\n" + "\n".join(lines[-20:]))
        time.sleep(0.05)


def owner(servers: tuple[WharfServer, ...], worker: str) -> WharfServer:
    """The replica whose process group runs ``worker`` (host:pid:suffix)."""
    pid = int(worker.split(":")[1])
    found = [
        server
        for server in servers
        if server.process is not None and os.getpgid(pid) == server.process.pid  # its own session
    ]
    assert len(found) == 1, (worker, [server.process and server.process.pid for server in servers])
    return found[0]


@dataclass
class Contents:
    kept: dict[str, Image]  # tag -> image, in lib/keep
    deleted: list[Image]  # pushed to lib/gone, then deleted by digest
    loose: list[str]  # blobs pushed to lib/loose, never in a manifest


def fill(client: httpx.Client, loose: int) -> Contents:
    """Three tagged images to keep; two deleted images and ``loose`` unreferenced blobs of garbage."""
    kept = {f"v{n}": Image.random(layers=2, size=512) for n in range(3)}
    for tag, image in kept.items():
        push_image(client, "lib/keep", image, tag)
    deleted = [Image.random(layers=1, size=256) for _ in range(2)]
    for image in deleted:
        push_image(client, "lib/gone", image)
        assert client.delete(f"/v2/lib/gone/manifests/{image.digest}").status_code == 202
    blobs = [push_blob(client, "lib/loose", os.urandom(64)) for _ in range(loose)]
    return Contents(kept, deleted, blobs)


def assert_consistent(server: WharfServer, contents: Contents) -> None:
    """Every kept image pulls whole with its digests verified; all the garbage is gone,
    from the API and from storage itself."""
    with server.client() as client:
        for tag, image in contents.kept.items():
            pulled = client.get(f"/v2/lib/keep/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert pulled.status_code == 200, pulled.text
            assert pulled.headers["docker-content-digest"] == image.digest == sha256(pulled.content)
            for blob in image.blobs:
                got = client.get(f"/v2/lib/keep/blobs/{sha256(blob)}")
                assert got.status_code == 200 and sha256(got.content) == sha256(blob)
        for image in contents.deleted:
            assert client.get(f"/v2/lib/gone/manifests/{image.digest}").status_code == 404
            for blob in image.blobs:
                assert client.head(f"/v2/lib/gone/blobs/{sha256(blob)}").status_code == 404
        for digest in contents.loose:
            assert client.head(f"/v2/lib/loose/blobs/{digest}").status_code == 404
    live = {sha256(blob) for image in contents.kept.values() for blob in image.blobs}
    assert stored_digests(server) == live


def start_gc(client: httpx.Client, **parameters: Any) -> str:
    response = client.post(
        "/api/v0/admin/jobs", json={"job": "registryGC", "parameters": {"graceSeconds": 0, **parameters}}
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def sweeping(found: dict[str, Any], lines: list[str]) -> bool:
    """Running, and past the plan: some blobs are deleted already (the log says so at a
    heartbeat). A job that ended before is a test too fast to show anything: it fails."""
    assert found["status"] not in TERMINAL, f"the collection ended before it could be interrupted: {found}"
    return found["status"] == "running" and any(line.startswith("deleted ") for line in lines)


def test_a_worker_killed_mid_collection_is_taken_over(replicas: StartReplicas) -> None:
    # stale: long enough that a live worker's heartbeat, late on a busy machine, is not
    # taken for a dead one's (the takeover waits this long after the kill).
    servers = replicas({"poll": "0.1s", "heartbeat": "0.2s", "stale": "10s"})
    with servers[0].client() as client:
        contents = fill(client, loose=replicas.garbage)
        job_id = start_gc(client, batchSize=1)
        running, _ = wait_until(client, job_id, sweeping, WAIT)
    assert running["attempts"] == 1
    victim = owner(servers, running["workerID"])
    (survivor,) = [server for server in servers if server is not victim]
    victim.stop(signal.SIGKILL)

    with survivor.client() as client:
        done, lines = wait_until(client, job_id, lambda found, _lines: found["status"] in TERMINAL, WAIT)
        assert done["status"] == "done", done
        assert done["attempts"] == 2 and done["workerID"] != running["workerID"]
        assert owner(servers, done["workerID"]) is survivor
        attempts = [ATTEMPT.match(line) for line in lines]
        assert [(m[1], m[3]) for m in attempts if m] == [
            ("1", running["workerID"]),
            ("2", done["workerID"]),
        ]
        # The survivor's own collection finished the sweep.
        history = client.get("/api/v0/admin/settings/registry/garbageCollection/history").json()["runs"]
        finished = [run for run in history if run["id"] == done["result"]["gcRun"]]
        assert finished and finished[0]["status"] == "done"
    assert_consistent(survivor, contents)


def test_a_stopping_server_hands_its_running_job_to_the_other_at_once(replicas: StartReplicas) -> None:
    stale = 600.0  # far longer than the test may take: only a hand-back is taken over in time
    servers = replicas({"poll": "0.1s", "heartbeat": "0.2s", "stale": f"{stale:g}s"})
    with servers[0].client() as client:
        contents = fill(client, loose=replicas.garbage)
        job_id = start_gc(client, batchSize=1)
        running, _ = wait_until(client, job_id, sweeping, WAIT)
    leaving = owner(servers, running["workerID"])
    (staying,) = [server for server in servers if server is not leaving]
    process = leaving.process
    assert process is not None
    stopped_at = time.monotonic()
    leaving.stop(signal.SIGTERM)
    assert process.returncode == 0, leaving.log_path.read_text()  # it exited by itself

    with staying.client() as client:
        done, lines = wait_until(client, job_id, lambda found, _lines: found["status"] in TERMINAL, WAIT)
        assert time.monotonic() - stopped_at < stale / 2  # taken over long before it went stale
        assert done["status"] == "done", done
        assert owner(servers, done["workerID"]) is staying
        assert done["attempts"] == 1  # the handed-back attempt is not counted
        assert (
            f"handed back: worker {running['workerID']} is shutting down (this attempt is not counted)"
            in lines
        )
        attempts = [ATTEMPT.match(line) for line in lines]
        assert [(m[1], m[3]) for m in attempts if m] == [
            ("1", running["workerID"]),
            ("1", done["workerID"]),
        ]
    assert_consistent(staying, contents)


def test_jobs_created_through_both_replicas_each_run_once(replicas: StartReplicas) -> None:
    servers = replicas({"poll": "0.1s", "heartbeat": "0.2s", "stale": "30s"})
    with servers[0].client() as one, servers[1].client() as two:
        fill(one, loose=40)
        # Six collections asked for at once, alternately through each replica: both workers
        # claim at the same moments, and one that finds the other's collection running waits.
        ids = [start_gc(client, batchSize=1) for client in (one, two) * 3]
        ended = [
            wait_until(one, job_id, lambda found, _: found["status"] in TERMINAL, WAIT) for job_id in ids
        ]
        history = one.get(
            "/api/v0/admin/settings/registry/garbageCollection/history", params={"limit": 50}
        ).json()["runs"]

    for (found, lines), job_id in zip(ended, ids, strict=True):
        assert found["status"] == "done", found
        assert found["attempts"] == 1, found
        claims = [line for line in lines if ATTEMPT.match(line)]
        assert claims == [f"attempt 1 of 3 on {found['workerID']}"], (job_id, lines)
        owner(servers, found["workerID"])  # a worker of one of the two replicas
    # Exactly one collection per job, and no two at once.
    runs = {found["result"]["gcRun"] for found, _ in ended}
    assert len(runs) == len(ids)
    assert sorted(run["id"] for run in history) == sorted(runs)
    spans = sorted(
        (datetime.fromisoformat(run["startedAt"]), datetime.fromisoformat(run["endedAt"])) for run in history
    )
    for (_start, end), (next_start, _end) in itertools.pairwise(spans):
        assert end <= next_start, spans
