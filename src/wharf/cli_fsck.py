"""`wharf fsck`: the registry check on a terminal (a progress bar) or in a log (quiet)."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime

import click

from .config import Settings
from .progress import terminal_bar
from .services.caller import COMMAND_LINE, Caller
from .services.fsck import Checker, FsckBusy, FsckOptions, finding_lines, summary_lines
from .wiring import build_registry

# Exit statuses, as `wharf fsck --help` documents them.
CLEAN = 0  # nothing wrong, or only leaks (bytes without rows: wasted space, no broken image)
PROBLEMS = 1  # a blob row without its bytes, or a missing reference
BUSY = 2  # --repair while a garbage collection or an import runs
FAILED = 3  # the check itself could not run to the end


def run_fsck(settings: Settings, options: FsckOptions, quiet: bool) -> int:
    return asyncio.run(_run(settings, options, quiet))


async def _run(settings: Settings, options: FsckOptions, quiet: bool) -> int:
    registry = build_registry(settings)
    checker = Checker(registry.meta, registry.storage)
    interrupted: list[str] = []
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.append, f"interrupted by {signal.Signals(signum).name}")

    bar = terminal_bar("{task.description}", quiet, elapsed=True)
    tasks: dict[str, object] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if bar is None:
            return
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total or None)
        bar.update(tasks[phase], completed=done, total=total or None)  # type: ignore[arg-type]

    try:
        if bar is not None:
            bar.start()
        try:
            report = await checker.run(
                Caller.local(COMMAND_LINE), options, progress, lambda: interrupted[0] if interrupted else None
            )
        finally:
            if bar is not None:
                bar.stop()
    except FsckBusy as exc:
        click.echo(f"wharf fsck: {exc}", err=True)
        return BUSY
    except Exception as exc:
        click.echo(f"wharf fsck: failed: {type(exc).__name__}: {exc}", err=True)
        return FAILED
    finally:
        await registry.close()
    if not quiet:
        for line in finding_lines(report, datetime.now(UTC)):
            sys.stdout.write(line + "\n")
    for line in summary_lines(report, options.grace):
        sys.stdout.write(line + "\n")
    if report.problems:
        return PROBLEMS
    return FAILED if report.stopped else CLEAN
