"""Schedules that never miss a slot, on each metadata backend: the firing is a task of its
own beside the worker (a worker busy with a long job still fires 03:00), a slot's firing
and its job are one transaction, and a settings document from a newer version is read
with a warning. The clock the schedules go by is injected: no test waits for 03:00."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from wharf.meta.jobs import Job
from wharf.meta.sql import SQLMetadataStore
from wharf.services.access import AccessService
from wharf.services.job_parameters import REGISTRY_GC
from wharf.services.jobs import JobContext, JobRunner, Timing
from wharf.services.schedules import GC_SETTINGS, GCSettings, ScheduleService

from .callers import ADMIN

# A stale time far beyond the test: no job is taken over behind its back.
TIMING = Timing(poll=0.05, heartbeat=0.1, stale=3600, retry_delay=0.0)
BEFORE = datetime(2030, 1, 5, 2, 59, 50, tzinfo=UTC)  # ten seconds before a 03:00 schedule
AT_THREE = datetime(2030, 1, 5, 3, 0, 1, tzinfo=UTC)


class Clock:
    """The time the schedules see, moved by the test."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"after {seconds} s: not {what}"
        await asyncio.sleep(0.02)


async def gc_jobs(store: SQLMetadataStore) -> list[Job]:
    return await store.jobs.find(REGISTRY_GC, None, None, 0, 100)


async def quick_gc(context: JobContext) -> dict[str, Any]:
    return {"status": "done"}


async def test_a_schedule_fires_while_the_only_worker_is_busy_with_a_long_job(store):
    clock = Clock(BEFORE)
    schedules = ScheduleService(
        store.jobs, timedelta(0), clock=clock, access=AccessService(store.accounts), events=store.events
    )
    await schedules.save_gc_settings(ADMIN, GCSettings(schedule="0 3 * * *"))
    entered, release = asyncio.Event(), asyncio.Event()

    async def long(context: JobContext) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return {"status": "done"}

    busy = await store.jobs.create("long")
    runner = JobRunner(store.jobs, {"long": long, REGISTRY_GC: quick_gc}, TIMING, "only", schedules)
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(entered.wait(), 15)
        assert await gc_jobs(store) == []  # 02:59:50: nothing due yet
        clock.moment = AT_THREE  # 03:00 comes while the only worker is busy

        async def fired() -> bool:
            return len(await gc_jobs(store)) == 1

        await until(fired, "fired at 03:00 while the worker is busy")
        (scheduled,) = await gc_jobs(store)
        assert scheduled.status == "waiting"
        assert (await store.jobs.get(busy.id)).status == "running"

        release.set()

        async def both_done() -> bool:
            jobs = [await store.jobs.get(busy.id), await store.jobs.get(scheduled.id)]
            return all(job is not None and job.status == "done" for job in jobs)

        await until(both_done, "both jobs done")
        assert len(await gc_jobs(store)) == 1  # the slot fired once, for all its polls
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(running, 15)


async def test_firing_a_slot_and_creating_its_job_are_one_transaction(store):
    """A job that cannot be written (here: parameters that are not JSON) leaves the slot
    unfired, so the next poll fires it: the slot's job is never lost between the two."""
    due = datetime(2030, 1, 5, 3, 0, tzinfo=UTC)
    with pytest.raises(Exception, match="JSON serializable"):
        await store.jobs.fire_schedule(GC_SETTINGS, due, REGISTRY_GC, {"unwritable": object()})
    assert await gc_jobs(store) == []
    job = await store.jobs.fire_schedule(GC_SETTINGS, due, REGISTRY_GC, {"mode": "online"})
    assert job is not None, "the failed firing left the slot marked as fired, with no job"
    assert (await store.jobs.get(job.id)).parameters == {"mode": "online"}
    assert await store.jobs.fire_schedule(GC_SETTINGS, due, REGISTRY_GC, {}) is None  # once
    assert [found.id for found in await gc_jobs(store)] == [job.id]


async def test_a_settings_document_with_unknown_keys_still_fires_and_jobs_are_claimed(store, caplog):
    """A newer version saved keys this one does not know (a rolling upgrade): the schedule
    still fires, jobs are still claimed, and the log says which keys were ignored, once."""
    newer = {"schedule": "0 3 * * *", "mode": "online", "retentionDays": 30, "notify": {"to": "ops"}}
    await store.jobs.put_setting(GC_SETTINGS, newer)
    schedules = ScheduleService(
        store.jobs,
        timedelta(0),
        clock=Clock(AT_THREE),
        access=AccessService(store.accounts),
        events=store.events,
    )

    async def work(context: JobContext) -> dict[str, Any]:
        return {"worked": True}

    waiting = await store.jobs.create("work")
    runner = JobRunner(store.jobs, {"work": work, REGISTRY_GC: quick_gc}, TIMING, "w1", schedules)
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="wharf.schedules")
    running = asyncio.create_task(runner.run(stop))
    try:

        async def claimed_and_fired() -> bool:
            job = await store.jobs.get(waiting.id)
            fired = await gc_jobs(store)
            return job is not None and job.status == "done" and [j.status for j in fired] == ["done"]

        await until(claimed_and_fired, "the waiting job claimed and the schedule fired")
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
    for _ in range(3):  # every poll reads the document: the warning is said once, not each time
        await schedules.gc_settings(ADMIN)
    warnings = [r for r in caplog.records if r.name == "wharf.schedules" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "notify, retentionDays" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

    # The document reads as what this version knows, and saving it keeps the newer keys.
    settings = await schedules.gc_settings(ADMIN)
    assert (settings.schedule, settings.mode) == ("0 3 * * *", "online")
    settings.mode = "readonly"
    await schedules.save_gc_settings(ADMIN, settings)
    saved = await store.jobs.get_setting(GC_SETTINGS)
    assert saved is not None
    assert (saved["mode"], saved["retentionDays"], saved["notify"]) == ("readonly", 30, {"to": "ops"})


async def test_the_settings_api_reads_a_document_with_unknown_keys(own_server):
    """Through a real `wharf serve`: the document a newer version saved answers 200 with
    what this version knows (a 500 before), says so in the log, and is saved back whole."""
    store = SQLMetadataStore(own_server.database_url)
    base = "/api/v0/admin/settings/registry/garbageCollection"
    try:
        await store.jobs.put_setting(GC_SETTINGS, {"schedule": "0 3 * * *", "retentionDays": 30})
        async with httpx.AsyncClient(base_url=own_server.url, timeout=30) as client:
            read = await client.get(base)
            assert read.status_code == 200, read.text
            assert (read.json()["schedule"], read.json()["mode"]) == ("0 3 * * *", "online")
            assert "retentionDays" not in read.json()
            saved = await client.post(f"{base}/schedule", json={"schedule": "0 4 * * *"})
            assert saved.status_code == 200, saved.text
        assert await store.jobs.get_setting(GC_SETTINGS) == {
            **asdict(GCSettings(schedule="0 4 * * *")),
            "retentionDays": 30,
        }
        assert "keys this version does not know, ignored: retentionDays" in own_server.log_path.read_text()
    finally:
        await store.close()
