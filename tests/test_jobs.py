"""Jobs: the worker's rules in-process on each metadata backend (retries, takeover, stop),
and the admin API against a real `wharf serve` whose worker runs garbage collection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wharf.services.jobs import JobContext, JobRunner, Timing

from .callers import ANYONE
from .gc import stored_digests
from .oci import Image, error_codes, push_image

FAST = Timing(poll=0.05, heartbeat=0.1, stale=0.5, retry_delay=0.0)


async def test_a_failing_job_is_tried_three_times_in_all(store):
    attempts: list[int] = []

    async def flaky(context: JobContext) -> dict[str, Any]:
        attempts.append(context.job.attempts)
        if len(attempts) < 3:
            raise RuntimeError(f"injected failure {len(attempts)}")
        return {"ok": True}

    job = await store.jobs.create("flaky")
    runner = JobRunner(store.jobs, {"flaky": flaky}, FAST, worker="w1")
    while await runner.run_one():
        pass
    done = await store.jobs.get(job.id)
    assert attempts == [1, 2, 3]
    assert (done.status, done.result) == ("done", {"ok": True})
    log = [line for _at, line in await store.jobs.logs(job.id, 0, 100)]
    assert "failed: RuntimeError: injected failure 1" in log


async def test_a_job_that_always_fails_ends_in_errors(store):
    async def broken(context: JobContext) -> dict[str, Any]:
        raise RuntimeError("always")

    job = await store.jobs.create("broken")
    runner = JobRunner(store.jobs, {"broken": broken}, FAST, worker="w1")
    while await runner.run_one():
        pass
    ended = await store.jobs.get(job.id)
    assert (ended.status, ended.attempts, ended.error) == ("errors", 3, "RuntimeError: always")


async def test_a_job_whose_worker_died_is_taken_over(store):
    job = await store.jobs.create("work")
    # A worker claims it and dies at once: no heartbeat ever comes.
    assert (await store.jobs.claim("dead", ["work"], datetime.now(UTC) - timedelta(hours=1))).id == job.id

    async def work(context: JobContext) -> dict[str, Any]:
        return {"by": "survivor"}

    # Whether its heartbeat is stale depends on the taker's ``stale`` alone, so no time need
    # pass: a taker allowing an hour leaves it, one allowing a few milliseconds takes it.
    patient = JobRunner(store.jobs, {"work": work}, Timing(poll=0.05, stale=3600), worker="survivor")
    assert not await patient.run_one()  # not stale yet
    eager = Timing(poll=0.05, heartbeat=0.1, stale=0.01, retry_delay=0.0)
    runner = JobRunner(store.jobs, {"work": work}, eager, worker="survivor")
    deadline = time.monotonic() + 60
    while not await runner.run_one():
        assert time.monotonic() < deadline, "the dead worker's job was never taken over"
        await asyncio.sleep(0.02)
    taken = await store.jobs.get(job.id)
    assert (taken.status, taken.worker, taken.attempts, taken.result) == (
        "done",
        "survivor",
        2,
        {"by": "survivor"},
    )


async def test_a_running_job_stops_when_asked(store):
    steps: list[int] = []
    STEPS = 3000  # a minute of work: a stop noticed within it, however busy the machine

    async def long(context: JobContext) -> dict[str, Any]:
        for step in range(STEPS):
            if context.should_stop():
                return {"status": "stopped", "reason": context.should_stop(), "steps": step}
            steps.append(step)
            await asyncio.sleep(0.02)
        return {"status": "done"}

    job = await store.jobs.create("long")
    runner = JobRunner(store.jobs, {"long": long}, FAST, worker="w1")
    running = asyncio.create_task(runner.run_one())
    deadline = time.monotonic() + 60
    while not steps:  # running: a stop now is asked of a job under way
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.02)
    await store.jobs.request_stop(job.id)
    await asyncio.wait_for(running, 60)
    stopped = await store.jobs.get(job.id)
    assert stopped.status == "stopped"
    assert stopped.error == "stopped on request"
    assert 0 < len(steps) < STEPS


async def test_a_worker_told_to_stop_hands_its_running_job_back(store):
    """Shutting down: the running job is interrupted and waiting again at once, the attempt
    given back, so another worker takes it without waiting for ``stale``."""
    entered = asyncio.Event()
    cancelled: list[str] = []

    async def endless(context: JobContext) -> dict[str, Any]:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(context.job.id)
            raise
        return {"by": "nobody"}

    job = await store.jobs.create("work")
    slow_timing = Timing(poll=0.05, heartbeat=0.1, stale=3600, retry_delay=0.0)
    stop = asyncio.Event()
    leaving = JobRunner(store.jobs, {"work": endless}, slow_timing, worker="leaving")
    running = asyncio.create_task(leaving.run(stop))
    await asyncio.wait_for(entered.wait(), 60)
    stop.set()
    await asyncio.wait_for(running, 60)
    assert cancelled == [job.id]
    back = await store.jobs.get(job.id)
    assert (back.status, back.worker, back.attempts, back.ended_at) == ("waiting", None, 0, None)

    async def work(context: JobContext) -> dict[str, Any]:
        return {"by": "staying"}

    staying = JobRunner(store.jobs, {"work": work}, slow_timing, worker="staying")
    assert await staying.run_one()  # no stale wait: it is waiting already
    done = await store.jobs.get(job.id)
    assert (done.status, done.worker, done.attempts, done.result) == ("done", "staying", 1, {"by": "staying"})
    log = [line for _at, line in await store.jobs.logs(job.id, 0, 100)]
    assert log == [
        "attempt 1 of 3 on leaving",
        "handed back: worker leaving is shutting down (this attempt is not counted)",
        "attempt 1 of 3 on staying",
    ]


async def test_release_belongs_to_the_owner_and_honours_a_stop_request(store):
    never = datetime.now(UTC) - timedelta(hours=1)
    job = await store.jobs.create("work")
    assert (await store.jobs.claim("owner", ["work"], never)).id == job.id
    assert await store.jobs.release(job.id, "someone-else") is None
    assert (await store.jobs.get(job.id)).status == "running"
    await store.jobs.request_stop(job.id)
    assert await store.jobs.release(job.id, "owner") == "stopped"
    stopped = await store.jobs.get(job.id)
    assert (stopped.status, stopped.error, stopped.attempts) == ("stopped", "stopped on request", 1)
    assert stopped.ended_at is not None
    assert await store.jobs.release(job.id, "owner") is None  # ended: nothing to hand back


async def test_a_gc_job_waits_for_a_collection_already_running(store, tmp_path):
    """Another collection holds the lock: the job waits for it (its attempt is not spent
    on GCBusy), then runs, once."""
    from wharf.services.gc import GarbageCollector
    from wharf.services.job_parameters import REGISTRY_GC
    from wharf.services.jobs import gc_action
    from wharf.storage.filesystem import FilesystemBlobStore

    collector = GarbageCollector(store, FilesystemBlobStore(tmp_path / "blobs", fsync=False))
    job = await store.jobs.create(REGISTRY_GC, {"graceSeconds": 0})
    runner = JobRunner(store.jobs, {REGISTRY_GC: gc_action(collector, busy_poll=0.05)}, FAST, worker="w1")
    waiting = "another garbage collection is running: waiting for it to end"
    async with store.gc_lock() as held:
        assert held
        running = asyncio.create_task(runner.run_one())
        deadline = time.monotonic() + 60
        while waiting not in [line for _at, line in await store.jobs.logs(job.id, 0, 100)]:
            assert time.monotonic() < deadline, "the job never said it was waiting"
            await asyncio.sleep(0.05)
        assert not running.done()
        assert (await store.jobs.get(job.id)).status == "running"
        assert await store.gc.runs(limit=5) == []
    await asyncio.wait_for(running, 60)
    done = await store.jobs.get(job.id)
    assert (done.status, done.attempts) == ("done", 1)
    assert [run.id for run in await store.gc.runs(limit=5)] == [done.result["gcRun"]]


# -- the admin API ------------------------------------------------------------------------


def wait_for(client, job_id: str, statuses: set[str], seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.get(f"/api/v0/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {seconds} s")


def test_post_admin_jobs_runs_gc_in_the_server_and_the_job_can_be_followed(own_server):
    image = Image.random()
    with own_server.client() as client:
        push_image(client, "lib/job", image)
        assert client.delete(f"/v2/lib/job/manifests/{image.digest}").status_code == 202

        response = client.post(
            "/api/v0/admin/jobs", json={"job": "registryGC", "parameters": {"graceSeconds": 0}}
        )
        assert response.status_code == 202, response.text
        job = response.json()
        assert (job["action"], job["status"], job["retriesLeft"]) == ("registryGC", "waiting", 3)

        done = wait_for(client, job["id"], {"done", "errors", "stopped"})
        assert done["status"] == "done", done
        assert done["result"]["blobsDeleted"] == 3 and done["result"]["bytesFreed"] > 0
        assert stored_digests(own_server) == set()
        lines = [entry["line"] for entry in client.get(f"/api/v0/jobs/{job['id']}/logs").json()["logs"]]
        assert any("3 blobs eligible for deletion" in line for line in lines), lines

        listed = client.get(
            "/api/v0/jobs", params={"action": "registryGC", "worker": "any", "running": "any"}
        )
        assert [j["id"] for j in listed.json()["jobs"]] == [job["id"]]
        assert client.get("/api/v0/jobs", params={"running": "true"}).json()["jobs"] == []


def test_jobs_api_errors_say_what_was_wrong(make_server):
    server = make_server({"jobs": {"enabled": False}})  # nothing runs: jobs stay waiting
    with server.client() as client:
        unknown = client.post("/api/v0/admin/jobs", json={"job": "defragment"})
        assert unknown.status_code == 400 and error_codes(unknown) == ["INVALID_JOB"]
        assert "registryGC" in unknown.json()["errors"][0]["message"]
        malformed = client.post("/api/v0/admin/jobs", json={"jobs": "registryGC"})
        assert malformed.status_code == 400
        bad_parameter = client.post(
            "/api/v0/admin/jobs", json={"job": "registryGC", "parameters": {"durationMinutes": -1}}
        )
        assert bad_parameter.status_code == 400
        assert "durationMinutes" in bad_parameter.json()["errors"][0]["message"]
        bad_batch = client.post(
            "/api/v0/admin/jobs", json={"job": "registryGC", "parameters": {"batchSize": 0}}
        )
        assert bad_batch.status_code == 400 and "batchSize" in bad_batch.json()["errors"][0]["message"]
        missing = client.get("/api/v0/jobs/no-such-job")
        assert missing.status_code == 404 and error_codes(missing) == ["NO_SUCH_JOB"]
        assert client.get("/api/v0/jobs", params={"running": "maybe"}).status_code == 400

        waiting = client.post("/api/v0/admin/jobs", json={"job": "registryGC"}).json()
        stopped = client.delete(f"/api/v0/jobs/{waiting['id']}")
        assert stopped.status_code == 202 and stopped.json()["status"] == "stopped"


async def test_a_readonly_collection_refuses_pushes_while_pulls_go_on(tmp_path):
    """DTR's default mode: for the run, pushes and deletes get an error naming the reason,
    on this replica and (through the database) on the others; pulls go on."""
    from wharf.config import Settings
    from wharf.errors import RegistryError
    from wharf.meta import migrate
    from wharf.services.job_parameters import REGISTRY_GC
    from wharf.services.maintenance import MaintenanceWatcher
    from wharf.wiring import build_registry

    from .oci import OCI_MANIFEST, sha256

    settings = Settings.model_validate(
        {"storage": {"filesystem": {"rootdirectory": str(tmp_path)}, "fsync": False}}
    )
    migrate.upgrade(settings.database_url)
    here, there = build_registry(settings), build_registry(settings)  # two replicas
    try:
        image = Image(config=b"{}", layers=[])
        await here.uploads.monolithic(ANYONE, "lib/ro", sha256(b"{}"), _body(b"{}"))
        await here.manifests.put(ANYONE, "lib/ro", "v1", image.manifest, OCI_MANIFEST)
        entered, release = asyncio.Event(), asyncio.Event()

        async def slow_gc(context: JobContext) -> dict[str, Any]:
            # As registryGC does through GarbageCollector.run, once it holds the GC lock.
            assert context.while_collecting is not None
            async with context.while_collecting():
                entered.set()
                await release.wait()
            return {"status": "done"}

        job = await here.meta.jobs.create(REGISTRY_GC, {"mode": "readonly"})
        runner = JobRunner(here.meta.jobs, {REGISTRY_GC: slow_gc}, FAST, policy=here.policy)
        other = MaintenanceWatcher(there.meta.jobs, there.policy, FAST.poll)
        running = asyncio.create_task(runner.run_one())
        await asyncio.wait_for(entered.wait(), 60)
        await other.refresh()
        for registry in (here, there):
            with pytest.raises(RegistryError) as refused:
                await registry.uploads.start(ANYONE, "lib/ro")
            assert refused.value.code.code == "UNSUPPORTED"
            assert f"garbage collection job {job.id}" in refused.value.message
            with pytest.raises(RegistryError):
                await registry.manifests.delete(ANYONE, "lib/ro", "v1")
            assert (
                await registry.manifests.get(ANYONE, "lib/ro", "v1")
            ).digest == image.digest  # pulls go on
        release.set()
        await asyncio.wait_for(running, 60)
        await other.refresh()
        for registry in (here, there):
            await registry.uploads.start(ANYONE, "lib/ro")  # writable again
    finally:
        await here.close()
        await there.close()


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_wharf_worker_runs_the_jobs_a_server_without_a_worker_accepts(make_server):
    import subprocess
    import sys

    import yaml

    from .gc import gc_env

    server = make_server({"jobs": {"enabled": False}, "gc": {"grace": "0s"}})
    worker_config = server.directory / "worker.yml"
    config = {**server.config, "jobs": {"enabled": True, "poll": "0.2s"}}
    worker_config.write_text(yaml.safe_dump(config))
    with subprocess.Popen(
        [sys.executable, "-m", "wharf", "worker", str(worker_config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=gc_env(),
    ) as worker:
        try:
            with server.client() as client:
                job = client.post("/api/v0/admin/jobs", json={"job": "registryGC"}).json()
                done = wait_for(client, job["id"], {"done", "errors"})
                assert done["status"] == "done"
                assert f":{worker.pid}:" in done["workerID"]
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert worker.returncode == 0
