"""Read-only maintenance on every replica: two `wharf serve` processes on one database and
one blob store (PostgreSQL + S3, and a shared SQLite file + directory). One runs the job
worker; the other has none (jobs.enabled: false) and two HTTP worker processes, each with
a policy of its own. A read-only collection started through the first refuses pushes on
both, every process of the second included, and only while it runs.

The collection is held running by the test holding the critical section of a garbage
blob (the job takes the GC lock, enters read-only mode, then waits for that section to
sweep), so it lasts exactly as long as the test needs, however busy the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from wharf.meta.sql import SQLMetadataStore

from .conftest import STACKS, stack_config
from .oci import error_codes, sha256
from .server import WharfServer, deep_merge

POLL = "0.2s"
HOLD = 10  # this many pushes in a row, each on a new connection, answered the same way
BEGINS = "read-only maintenance begins"
ENDED = "read-only maintenance ended"


@pytest.fixture(params=STACKS)
def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, make_server: Callable[..., WharfServer]
) -> Iterator[tuple[WharfServer, WharfServer]]:
    """(with a worker, without one and with two HTTP worker processes), sharing one stack."""
    with stack_config(request, request.param) as config:
        if request.param == "sqlite+filesystem":
            config = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "shared")}}}
        config = deep_merge(config, {"log": {"level": "info"}})
        working = make_server(deep_merge(config, {"jobs": {"enabled": True, "poll": POLL}}))
        serving = make_server(
            deep_merge(config, {"jobs": {"enabled": False, "poll": POLL}, "http": {"workers": 2}})
        )
        yield working, serving


async def push(client: httpx.AsyncClient, repo: str) -> httpx.Response:
    data = os.urandom(64)
    return await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data)


async def answered_in_a_row(client: httpx.AsyncClient, status: int, what: str, seconds: float = 30) -> None:
    """Push until HOLD pushes in a row get ``status``: with a new connection each, they
    reach both HTTP worker processes of the replica. Fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    streak = 0
    while streak < HOLD:
        response = await push(client, "lib/pushed")
        streak = streak + 1 if response.status_code == status else 0
        if streak == 0:
            assert time.monotonic() < deadline, f"{what}: still {response.status_code} {response.text}"
            await asyncio.sleep(0.05)


async def job_seen(
    client: httpx.AsyncClient, job_id: str, done: Callable[[dict[str, Any], list[str]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = (await client.get(f"/api/v0/jobs/{job_id}")).json()
        logs = (await client.get(f"/api/v0/jobs/{job_id}/logs")).json()["logs"]
        if done(job, [entry["line"] for entry in logs]):
            return dict(job)
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def log_lines(server: WharfServer, line: str, count: int) -> None:
    """Wait until ``line`` is in the replica's log ``count`` times (once per process)."""
    deadline = time.monotonic() + 30
    while server.log_path.read_text().count(line) < count:
        assert time.monotonic() < deadline, server.log_path.read_text()[-4000:]
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def collection_held(store: SQLMetadataStore, client: httpx.AsyncClient) -> AsyncIterator[None]:
    """Garbage whose digest section the test holds: a collection sweeping it waits inside."""
    garbage = os.urandom(96)
    pushed = await client.post(
        "/v2/lib/garbage/blobs/uploads/", params={"digest": sha256(garbage)}, content=garbage
    )
    assert pushed.status_code == 201, pushed.text
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        entered.set()
        await release.wait()

    holding = asyncio.create_task(store.digest_section([sha256(garbage)], hold))
    await asyncio.wait_for(entered.wait(), 30)
    try:
        yield
    finally:
        release.set()
        await holding


async def start_readonly_collection(admin: httpx.AsyncClient) -> str:
    started = await admin.post(
        "/api/v0/admin/jobs",
        json={"job": "registryGC", "parameters": {"mode": "readonly", "graceSeconds": 0}},
    )
    assert started.status_code == 202, started.text
    return str(started.json()["id"])


def in_readonly(job: dict[str, Any], lines: list[str]) -> bool:
    return job["status"] == "running" and any(line.startswith("read-only mode") for line in lines)


async def test_a_readonly_collection_refuses_pushes_on_a_replica_without_a_worker(replicas):
    working, serving = replicas
    store = SQLMetadataStore(working.database_url)
    # No keep-alive: every request opens a connection, which either worker process may take.
    fresh = httpx.AsyncClient(
        base_url=serving.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    )
    admin = httpx.AsyncClient(base_url=working.url, timeout=30)
    try:
        kept = os.urandom(128)
        before = await fresh.post(
            "/v2/lib/kept/blobs/uploads/", params={"digest": sha256(kept)}, content=kept
        )
        assert before.status_code == 201, before.text

        async with collection_held(store, admin):
            job_id = await start_readonly_collection(admin)
            await job_seen(admin, job_id, in_readonly)

            await answered_in_a_row(fresh, 405, "the replica without a worker kept accepting pushes")
            refused = await push(fresh, "lib/pushed")
            assert refused.status_code == 405 and error_codes(refused) == ["UNSUPPORTED"]
            assert f"garbage collection job {job_id}" in refused.json()["errors"][0]["message"]
            await log_lines(serving, BEGINS, 2)  # both of its processes learned it
            assert (await push(admin, "lib/pushed")).status_code == 405  # the worker's own replica
            pulled = await fresh.get(f"/v2/lib/kept/blobs/{sha256(kept)}")
            assert pulled.status_code == 200 and pulled.content == kept  # pulls go on

        # The lock is free: the collection runs, ends, and read-only mode with it.
        ended = await job_seen(admin, job_id, lambda job, _lines: job["status"] in {"done", "errors"})
        assert ended["status"] == "done", ended
        await answered_in_a_row(fresh, 201, "pushes still refused after the collection ended")
        await log_lines(serving, ENDED, 2)
        assert (await push(admin, "lib/pushed")).status_code == 201
    finally:
        await fresh.aclose()
        await admin.aclose()
        await store.close()


async def waiting_for_the_lock(admin: httpx.AsyncClient, jobs: list[str], line: str) -> str:
    """The one of ``jobs`` whose log says it waits for another collection to end."""
    deadline = time.monotonic() + 60
    while True:
        for job in jobs:
            logs = (await admin.get(f"/api/v0/jobs/{job}/logs")).json()["logs"]
            if any(entry["line"] == line for entry in logs):
                return job
        assert time.monotonic() < deadline, f"neither job waits for the other: {jobs}"
        await asyncio.sleep(0.05)


async def test_a_readonly_collection_waiting_for_another_leaves_its_window_alone(replicas, make_server):
    """Two read-only collections on two workers: the second waits for the first's GC lock
    and is stopped while it waits. It must neither open a window of its own before it holds
    the lock nor, giving up, close the first one's: pushes stay refused until the first ends."""
    working, serving = replicas
    make_server({key: value for key, value in working.config.items() if key != "http"})  # a 2nd worker
    store = SQLMetadataStore(working.database_url)
    fresh = httpx.AsyncClient(
        base_url=serving.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    )
    admin = httpx.AsyncClient(base_url=working.url, timeout=30)
    waiting_line = "another garbage collection is running: waiting for it to end"
    try:
        async with collection_held(store, admin):
            jobs = [await start_readonly_collection(admin) for _ in range(2)]
            waiting = await waiting_for_the_lock(admin, jobs, waiting_line)
            [first] = [job for job in jobs if job != waiting]
            await answered_in_a_row(fresh, 405, "the first collection's window is not open")
            stopped = await admin.delete(f"/api/v0/jobs/{waiting}")
            assert stopped.status_code == 202, stopped.text
            await job_seen(admin, waiting, lambda job, _lines: job["status"] == "stopped")
            await answered_in_a_row(fresh, 405, "the stopped collection ended the running one's window")
        ended = await job_seen(admin, first, lambda job, _lines: job["status"] in {"done", "errors"})
        assert ended["status"] == "done", ended
        await answered_in_a_row(fresh, 201, "pushes still refused after the collection ended")
    finally:
        await fresh.aclose()
        await admin.aclose()
        await store.close()
