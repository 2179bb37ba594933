"""The job rows of the metadata store (jobs, schedules' firings, settings): one suite run on
every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio


async def test_a_job_is_claimed_once_and_runs_its_course(store):
    from datetime import UTC, datetime, timedelta

    job = await store.jobs.create("registryGC", {"dryRun": True})
    assert job.status == "waiting"
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    claims = await asyncio.gather(*(store.jobs.claim(f"w{n}", ["registryGC"], long_ago) for n in range(4)))
    taken = [c for c in claims if c is not None]
    assert [c.id for c in taken] == [job.id]
    assert (taken[0].status, taken[0].attempts) == ("running", 1)
    assert await store.jobs.claim("w9", ["registryGC"], long_ago) is None
    worker = taken[0].worker
    assert await store.jobs.heartbeat(job.id, worker) is False
    assert await store.jobs.heartbeat(job.id, "someone else") is None
    await store.jobs.log(job.id, "first line")
    await store.jobs.log(job.id, "second line")
    assert [line for _at, line in await store.jobs.logs(job.id, 0, 10)] == ["first line", "second line"]
    assert (await store.jobs.request_stop(job.id)).stop_requested
    assert await store.jobs.heartbeat(job.id, worker) is True
    await store.jobs.finish(job.id, worker, "stopped", {"blobs": 1}, None)
    done = await store.jobs.get(job.id)
    assert (done.status, done.result, done.ended_at is not None) == ("stopped", {"blobs": 1}, True)
    assert [j.id for j in await store.jobs.find("registryGC", None, False, 0, 10)] == [job.id]
    assert await store.jobs.find("registryGC", None, True, 0, 10) == []


async def test_a_failed_job_is_retried_then_ends_in_errors_and_a_dead_worker_is_taken_over(store):
    from datetime import UTC, datetime, timedelta

    past = datetime.now(UTC) - timedelta(minutes=5)
    job = await store.jobs.create("purgeUploads", max_attempts=3)
    first = await store.jobs.claim("w1", ["purgeUploads"], past)
    assert await store.jobs.retry(job.id, "w1", "boom", datetime.now(UTC))
    second = await store.jobs.claim("w2", ["purgeUploads"], past)
    assert (first.attempts, second.attempts, second.worker) == (1, 2, "w2")
    # w2 dies: no heartbeat. Another worker takes the job over once it is stale.
    assert await store.jobs.claim("w3", ["purgeUploads"], past) is None
    third = await store.jobs.claim("w3", ["purgeUploads"], datetime.now(UTC) + timedelta(seconds=1))
    assert (third.id, third.attempts, third.worker) == (job.id, 3, "w3")
    assert not await store.jobs.retry(job.id, "w3", "boom again", datetime.now(UTC))
    ended = await store.jobs.get(job.id)
    assert (ended.status, ended.error) == ("errors", "boom again")


async def test_a_schedule_fires_once_across_replicas_and_settings_round_trip(store):
    from datetime import UTC, datetime

    due = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    fired = await asyncio.gather(*(store.jobs.fire_schedule("gc", due, "registryGC", {}) for _ in range(3)))
    assert len([job for job in fired if job is not None]) == 1
    assert await store.jobs.get_setting("gc") is None
    await store.jobs.put_setting("gc", {"schedule": "0 0 3 * * SAT"})
    await store.jobs.put_setting("gc", {"schedule": "0 3 * * *"})
    assert await store.jobs.get_setting("gc") == {"schedule": "0 3 * * *"}
