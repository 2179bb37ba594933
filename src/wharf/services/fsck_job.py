"""The fsck job: `wharf fsck` through /api/v0/admin/jobs, its findings in the job's log and
its counts in the job's result."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..config import parse_duration
from .fsck import Checker, FsckBusy, FsckOptions, finding_lines, summary_lines
from .jobs import WORKER, Action, JobContext, JobFailed, _once_free


def fsck_action(checker: Checker, grace: timedelta, busy_poll: float = 1.0) -> Action:
    """fsck: parameters ``repair`` (delete leaks older than the grace period) and ``grace``
    (a duration; by default gc.grace, passed here). A repair waits for a garbage collection
    running (on any replica) to end, as registryGC does; a check alone does not need to."""

    async def run(context: JobContext) -> dict[str, Any]:
        parameters = context.job.parameters or {}
        try:
            given = parameters.get("grace")
            options = FsckOptions(
                repair=bool(parameters.get("repair", False)),
                grace=grace if given is None else parse_duration(str(given)),
            )
        except ValueError as error:
            raise JobFailed(f"parameter grace: {error}") from None
        report = await _once_free(
            context,
            lambda: checker.run(WORKER, options, should_stop=context.should_stop),
            FsckBusy,
            "a garbage collection",
            busy_poll,
        )
        if report is None:
            return {"status": "stopped", "reason": context.should_stop()}
        for line in finding_lines(report, datetime.now(UTC)):
            context.say(line, listed=True)
        context.end_listing()
        for line in summary_lines(report, options.grace):
            context.say(line, listed=line.startswith("repair: deleted leak"))
        return report.result()

    return run
