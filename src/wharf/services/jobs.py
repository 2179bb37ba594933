"""Jobs: background work that any worker of any replica may run, claimed through the
database. A worker claims the oldest due job, runs its action while heart-beating (which
is also how it learns that a stop was asked), and records how it ended. A failed job is
tried again, three attempts in all; a job whose worker stopped heart-beating is taken over.
A worker told to stop hands its running job back at once (waiting again, the attempt not
counted), so another worker takes it without waiting for the heartbeat to go stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

from ..config import parse_duration
from ..meta.jobs import Job, JobStore
from ..meta.store import MetadataStore
from . import gc_defaults
from .caller import JOB_WORKER, Caller
from .gc import GarbageCollector, GCBusy, GCOptions
from .gc_report import JOB_ZERO_GRACE, grace_kept_line, kept_by_grace, would_free
from .importer import DistributionImporter, ImportBusy, NotADistributionDirectory
from .job_parameters import REGISTRY_GC
from .maintenance import MAINTENANCE
from .policy import Policy
from .purge import UploadPurger
from .schedules import ScheduleService

log = logging.getLogger("wharf.jobs")

# Observed in the process that runs the job (a `wharf serve` with jobs enabled, or a worker).
JOB_DURATION = Histogram(
    "wharf_job_duration_seconds",
    "How long job attempts ran, by action and outcome (done, stopped, failed)",
    ("action", "outcome"),
    buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 21600),
)
# Who the actions call the services as: the registry itself, for whoever started the job.
WORKER = Caller.local(JOB_WORKER)
JOB_FAILURES = Counter("wharf_job_failures", "Job attempts that failed (raised), by action", ("action",))
# Lines of a job's log kept for the "eligible for deletion" listings, which can be long.
LISTED_LINES = 100


class JobFailed(Exception):
    """The job cannot succeed as asked (a parameter names nothing usable): it ends in
    errors at once, with this message, instead of being tried again."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Timing:
    poll: float = 1.0  # seconds between looks for work when there is none
    heartbeat: float = 2.0
    stale: float = 30.0  # a running job without a heartbeat this long is taken over
    retry_delay: float = 5.0  # before the next attempt of a failed job


@dataclass
class JobContext:
    """What an action may use: its job, a log, and whether it should stop now."""

    job: Job
    jobs: JobStore
    deadline: datetime | None = None
    stop_asked: bool = False
    # Entered by a collection once it holds the GC lock (a read-only job's window), or None.
    while_collecting: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None
    lines: list[str] = field(default_factory=list)
    listed: int = 0

    def say(self, line: str, listed: bool = False) -> None:
        """Add a line to the job's log; ``listed`` ones (one per item, like GC's listings of
        what it marks and deletes) are kept up to LISTED_LINES."""
        if listed or "eligible for deletion:" in line or "marking" in line:
            self.listed += 1
            if self.listed > LISTED_LINES:
                return
        self.lines.append(line)

    def end_listing(self) -> None:
        if self.listed > LISTED_LINES:
            self.say(f"... {self.listed - LISTED_LINES} more lines not kept")

    async def flush(self) -> None:
        lines, self.lines = self.lines, []
        for line in lines:
            await self.jobs.log(self.job.id, line)

    def should_stop(self) -> str | None:
        if self.stop_asked:
            return "stopped on request"
        if self.deadline is not None and datetime.now(UTC) >= self.deadline:
            return "time budget used up"
        return None


Action = Callable[[JobContext], Awaitable[dict[str, Any]]]


T = TypeVar("T")


async def _once_free(
    context: JobContext, attempt: Callable[[], Awaitable[T]], busy: type[Exception], what: str, poll: float
) -> T | None:
    """``attempt()``, run again every ``poll`` seconds while it raises ``busy`` (``what``
    holds the garbage collection lock); None if a stop is asked meanwhile."""
    waiting = False
    while True:
        try:
            return await attempt()
        except busy:
            reason = context.should_stop()
            if reason is not None:
                context.say(f"{reason} while waiting for {what} to end")
                return None
            if not waiting:
                context.say(f"{what} is running: waiting for it to end")
                waiting = True
            await asyncio.sleep(poll)


def gc_action(gc: GarbageCollector, busy_poll: float = 1.0) -> Action:
    """registryGC. A collection already running (another job's, on any replica, or
    `wharf garbage-collect`) is waited for, looking again every ``busy_poll`` seconds: the
    job runs after it rather than failing an attempt. The wait counts against
    ``durationMinutes`` and ends on a stop request."""

    async def run(context: JobContext) -> dict[str, Any]:
        parameters = context.job.parameters or {}
        minutes = parameters.get("durationMinutes")
        if minutes is not None:
            context.deadline = (context.job.started_at or datetime.now(UTC)) + timedelta(
                minutes=float(minutes)
            )
        options = GCOptions(
            dry_run=bool(parameters.get("dryRun", gc_defaults.DRY_RUN)),
            delete_untagged=bool(parameters.get("deleteUntagged", gc_defaults.DELETE_UNTAGGED)),
            grace=timedelta(
                seconds=float(parameters.get("graceSeconds", gc_defaults.GRACE_PERIOD.total_seconds()))
            ),
            scan_storage=bool(parameters.get("scanStorage", gc_defaults.SCAN_STORAGE)),
            mode=str(parameters.get("mode", gc_defaults.MODE)),
            batch=int(parameters.get("batchSize", gc_defaults.BATCH)),
        )
        outcome = await _once_free(
            context,
            lambda: gc.run(
                WORKER,
                options,
                context.say,
                should_stop=context.should_stop,
                while_held=context.while_collecting,
            ),
            GCBusy,
            "another garbage collection",
            busy_poll,
        )
        if outcome is None:
            return {"gcRun": None, "status": "stopped", "reason": context.should_stop()}
        context.end_listing()
        run = outcome.run
        kept = grace_kept_line(run, JOB_ZERO_GRACE)
        if kept is not None:
            context.say(kept)
        return {
            "gcRun": run.id,
            "status": run.status,
            "reason": run.reason,
            "dryRun": run.dry_run,
            "blobsDeleted": run.blobs_deleted,
            "manifestsDeleted": run.manifests_deleted,
            "bytesFreed": run.bytes_freed,
            "wouldFree": would_free(run),
            "keptByGrace": kept_by_grace(run),
        }

    return run


def purge_action(purger: UploadPurger, age: str, dry_run: bool) -> Action:
    """purgeUploads: parameters ``age`` (a duration) and ``dryRun``; when not given, those
    of the configuration (storage.maintenance.uploadpurging), passed here."""

    async def run(context: JobContext) -> dict[str, Any]:
        parameters = context.job.parameters or {}
        try:
            idle = parse_duration(str(parameters.get("age") or age))
        except ValueError as error:
            raise JobFailed(f"parameter age: {error}") from None
        dry = bool(parameters.get("dryRun", dry_run))
        report = await purger.run(idle, dry, context.say, should_stop=context.should_stop)
        context.end_listing()
        return report.result()

    return run


def migration_action(meta: MetadataStore, storage_root: Path | None, busy_poll: float = 1.0) -> Action:
    """metadatastoremigration: adopt the Distribution data directory ``root`` (parameter;
    by default, and necessarily, this registry's filesystem storage root: the blobs stay
    where they are). Garbage collections and the import wait for each other."""

    async def run(context: JobContext) -> dict[str, Any]:
        if storage_root is None:
            raise JobFailed(
                "this registry stores blobs on S3: a Distribution directory is adopted only by a "
                "registry whose storage.filesystem.rootdirectory is that directory"
            )
        root = Path(str((context.job.parameters or {}).get("root") or storage_root))
        # Compared first: nothing is said about paths elsewhere on the worker's host.
        if root.resolve() != storage_root.resolve():
            raise JobFailed(
                f"root {root} is not this registry's storage root ({storage_root}): Wharf serves the "
                "blobs where Distribution left them, so set storage.filesystem.rootdirectory to it"
            )
        host = socket.gethostname()
        if not root.is_dir():
            raise JobFailed(
                f"root {root} does not exist or is not a directory (on {host}, where the worker runs)"
            )
        try:
            importer = DistributionImporter(meta, root.resolve())
        except NotADistributionDirectory as error:
            raise JobFailed(str(error)) from None
        context.say(f"importing the Distribution directory {root.resolve()}; no blob is copied")

        def progress(done: int, total: int, name: str) -> None:
            if name:
                context.say(f"importing {name} ({done + 1} of {total})", listed=True)

        found = await _once_free(
            context,
            lambda: importer.run(WORKER, progress, should_stop=context.should_stop),
            ImportBusy,
            "a garbage collection",
            busy_poll,
        )
        if found is None:
            return {"status": "stopped", "reason": context.should_stop()}
        report = found
        for problem in report.skipped:
            context.say(f"skipped: {problem}", listed=True)
        context.end_listing()
        context.say(
            f"imported {report.repositories} repositories: {report.manifests} manifests, {report.tags} tags, "
            f"{report.blobs} blobs added ({len(report.skipped)} items skipped)"
            + (f"; stopped: {report.stopped} (run it again to finish)" if report.stopped else "")
        )
        result: dict[str, Any] = {
            "repositories": report.repositories,
            "manifests": report.manifests,
            "tags": report.tags,
            "blobs": report.blobs,
            "skipped": len(report.skipped),
        }
        if report.stopped:
            result.update(status="stopped", reason=report.stopped)
        return result

    return run


class JobRunner:
    def __init__(
        self,
        jobs: JobStore,
        actions: dict[str, Action],
        timing: Timing | None = None,
        worker: str | None = None,
        schedules: ScheduleService | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.jobs = jobs
        self.actions = actions
        self.schedules = schedules
        self.policy = policy
        self.timing = timing or Timing()
        self.worker = worker or worker_name()
        # Set while this worker shuts down (``run``'s stop): a running job is handed back.
        self.stopping: asyncio.Event | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set. A job running then is interrupted and
        handed back (see ``execute``), so this returns promptly. Due schedules are fired by
        a task of their own beside it, so a worker busy with a long job still fires 03:00."""
        self.stopping = stop
        firing = None
        if self.schedules is not None:
            firing = asyncio.create_task(self.schedules.run(stop, self.timing.poll))
        try:
            while not stop.is_set():
                try:
                    worked = await self.run_one()
                except Exception:  # a database hiccup must not end the worker
                    log.exception("job worker: looking for work failed")
                    worked = False
                if not worked:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.timing.poll)
        finally:
            if firing is not None:
                firing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await firing

    async def run_one(self) -> bool:
        stale_before = datetime.now(UTC) - timedelta(seconds=self.timing.stale)
        job = await self.jobs.claim(self.worker, list(self.actions), stale_before)
        if job is None:
            return False
        await self.execute(job)
        return True

    async def execute(self, job: Job) -> None:
        started = time.monotonic()
        context = JobContext(job, self.jobs)
        beating = asyncio.create_task(self._heartbeat(context))
        await self.jobs.log(job.id, f"attempt {job.attempts} of {job.max_attempts} on {self.worker}")
        if job.action == REGISTRY_GC and (job.parameters or {}).get("mode") == "readonly":
            context.while_collecting = lambda: self._readonly_window(job)
        try:
            result = await self._act(job, context)
        except asyncio.CancelledError:
            raise
        except JobFailed as error:
            beating.cancel()
            context.say(f"failed: {error}")
            await context.flush()
            await self.jobs.finish(job.id, self.worker, "errors", None, str(error))
            JOB_FAILURES.labels(job.action).inc()
            JOB_DURATION.labels(job.action, "failed").observe(time.monotonic() - started)
            log.warning(
                "job %s (%s) failed: %s; not retried",
                job.id,
                job.action,
                error,
                extra={"job_id": job.id, "action": job.action, "attempt": job.attempts, "retried": False},
            )
            return
        except Exception as error:
            beating.cancel()
            message = f"{type(error).__name__}: {error}"
            context.say(f"failed: {message}")
            await context.flush()
            at = datetime.now(UTC) + timedelta(seconds=self.timing.retry_delay)
            again = await self.jobs.retry(job.id, self.worker, message, at)
            JOB_FAILURES.labels(job.action).inc()
            JOB_DURATION.labels(job.action, "failed").observe(time.monotonic() - started)
            log.warning(
                "job %s (%s) failed: %s; %s",
                job.id,
                job.action,
                message,
                "retried" if again else "gave up",
                extra={"job_id": job.id, "action": job.action, "attempt": job.attempts, "retried": again},
            )
            return
        finally:
            beating.cancel()
        if result is None:
            await self._hand_back(job, context)
            return
        await context.flush()
        status = "stopped" if result.get("status") == "stopped" else "done"
        await self.jobs.finish(
            job.id, self.worker, status, result, result.get("reason") if status == "stopped" else None
        )
        seconds = time.monotonic() - started
        JOB_DURATION.labels(job.action, status).observe(seconds)
        log.info(
            "job %s (%s) %s in %.1f s",
            job.id,
            job.action,
            status,
            seconds,
            extra={"job_id": job.id, "action": job.action, "attempt": job.attempts, "status": status},
        )

    async def _act(self, job: Job, context: JobContext) -> dict[str, Any] | None:
        """The action's result; None when this worker was told to stop first, in which case
        the action was cancelled (and has cleaned up: a GC cancelled mid-batch is left as a
        crash would leave it, which the next run finishes)."""
        acting = asyncio.ensure_future(self.actions[job.action](context))
        if self.stopping is None:
            return await acting
        stopping = asyncio.ensure_future(self.stopping.wait())
        interrupted = False
        try:
            await asyncio.wait({acting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not acting.done():
                interrupted = True
                acting.cancel()
                await asyncio.wait({acting})
        if interrupted and (acting.cancelled() or acting.exception() is not None):
            if not acting.cancelled():
                error = acting.exception()
                log.info("job %s (%s) ended as it was interrupted: %r", job.id, job.action, error)
            return None
        return acting.result()

    async def _hand_back(self, job: Job, context: JobContext) -> None:
        context.say(f"handed back: worker {self.worker} is shutting down (this attempt is not counted)")
        await context.flush()
        status = await self.jobs.release(job.id, self.worker)
        if status == "waiting":
            log.info("job %s (%s) handed back for another worker", job.id, job.action)
        elif status == "stopped":
            log.info("job %s (%s) stopped as asked, by its worker shutting down", job.id, job.action)
        else:
            log.warning("job %s (%s) was no longer this worker's to hand back", job.id, job.action)

    @contextlib.asynccontextmanager
    async def _readonly_window(self, job: Job) -> AsyncIterator[None]:
        """The registry read-only on every replica while this job collects: entered only once
        it holds the GC lock (a job waiting for another collection must not end that one's
        window when it gives up, nor begin its own early), and begun by waiting one poll, the
        longest any serving process takes to learn of the mark. Left only if the mark is
        still this job's."""
        reason = (
            f"the registry is read-only while garbage collection job {job.id} runs in read-only mode; "
            "pulls go on, pushes and deletes can be retried when it ends"
        )
        await self.jobs.put_setting(MAINTENANCE, {"job": job.id, "reason": reason})
        try:
            if self.policy is not None:
                self.policy.maintenance = reason
            await self.jobs.log(job.id, "read-only mode: pushes and deletes refused until the end of the run")
            await asyncio.sleep(self.timing.poll)  # every replica has read the mark by now
            yield
        finally:
            await asyncio.shield(self._leave_readonly(job))

    async def _leave_readonly(self, job: Job) -> None:
        current = await self.jobs.get_setting(MAINTENANCE) or {}
        if current.get("job") in (None, job.id):
            await self.jobs.put_setting(MAINTENANCE, {})
        if self.policy is not None and self.policy.maintenance and job.id in self.policy.maintenance:
            self.policy.maintenance = None

    async def _heartbeat(self, context: JobContext) -> None:
        while True:
            await asyncio.sleep(self.timing.heartbeat)
            try:
                stop = await self.jobs.heartbeat(context.job.id, self.worker)
            except Exception:
                log.exception("job %s: heartbeat failed", context.job.id)
                continue
            if stop is None or stop:
                # Asked to stop, or the job was taken from this worker: end at the next batch.
                context.stop_asked = True
            await context.flush()
