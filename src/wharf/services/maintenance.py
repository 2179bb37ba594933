"""Read-only maintenance across replicas. A collection in read-only mode leaves a mark in
the database while it runs (the MAINTENANCE setting, naming its job); every process that
serves /v2 follows that mark with a watcher of its own, started with the app whatever
``jobs.enabled`` says, so a replica without a worker, or whose worker is busy with another
job, refuses pushes too. The watcher reads the mark once a poll: requests never query it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..meta.jobs import JobStore
from .policy import Policy

log = logging.getLogger("wharf.maintenance")

MAINTENANCE = "maintenance"  # the setting a read-only collection leaves while it runs


async def current_maintenance(jobs: JobStore) -> str | None:
    """Why writes wait now, or None. A mark left by a worker that died counts only while
    its job is still running (a takeover marks it again; a job that ended does not)."""
    mark = await jobs.get_setting(MAINTENANCE) or {}
    if not mark.get("job"):
        return None
    job = await jobs.get(str(mark["job"]))
    if job is None or job.status != "running":
        return None
    return str(mark.get("reason"))


class MaintenanceWatcher:
    """Keeps one process's policy in step with the mark, reading it every ``poll`` seconds
    (each worker process of `wharf serve` has its policy, and its watcher)."""

    def __init__(self, jobs: JobStore, policy: Policy, poll: float) -> None:
        self.jobs = jobs
        self.policy = policy
        self.poll = poll

    async def refresh(self) -> None:
        reason = await current_maintenance(self.jobs)
        if reason != self.policy.maintenance:
            log.info("read-only maintenance %s", f"begins: {reason}" if reason else "ended")
        self.policy.maintenance = reason

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh at once, then every poll, until ``stop`` is set. A database that does not
        answer keeps the last state known (and is said in the log), never ends the watch."""
        failing = False
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception:
                if not failing:  # once per outage, not once a poll
                    log.exception("maintenance watcher: reading the read-only mark failed")
                failing = True
            else:
                if failing:
                    log.info("maintenance watcher: reading the read-only mark again")
                failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll)
