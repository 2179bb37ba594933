"""`wharf garbage-collect`: the GC engine on a terminal (a progress bar) or in a log (quiet)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import timedelta

import click

from .config import Settings
from .progress import terminal_bar
from .services.gc import GCBusy, GCOptions, Outcome
from .services.gc_report import grace_kept_line
from .wiring import build_registry


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def summary(outcome: Outcome, seconds: float) -> str:
    kept = grace_kept_line(outcome.run)
    line = _freed(outcome, seconds)
    return line if kept is None else f"{line}\n{kept}"


def _freed(outcome: Outcome, seconds: float) -> str:
    run, plan = outcome.run, outcome.plan
    if run.dry_run:
        return (
            f"dry run: would delete {len(plan.manifests)} manifests and "
            f"{plan.blob_count} blobs ({human_bytes(plan.bytes)}); nothing was deleted"
        )
    line = (
        f"deleted {run.manifests_deleted} manifests and {run.blobs_deleted} blobs, "
        f"freed {human_bytes(run.bytes_freed)} in {seconds:.2f} s"
    )
    skipped = len(plan.manifests) + plan.blob_count - run.manifests_deleted - run.blobs_deleted
    if run.status == "stopped":
        line += f"\nstopped: {run.reason}; what is left is collected by the next run"
    elif skipped:
        line += f" ({skipped} eligible ones were in use again by the time they were reached, and kept)"
    return line


def run_garbage_collection(
    settings: Settings, options: GCOptions, max_duration: timedelta | None, quiet: bool
) -> int:
    return asyncio.run(_run(settings, options, max_duration, quiet))


async def _run(settings: Settings, options: GCOptions, max_duration: timedelta | None, quiet: bool) -> int:
    registry = build_registry(settings)
    started = time.monotonic()
    deadline = None if max_duration is None else started + max_duration.total_seconds()
    interrupted: list[str] = []

    def should_stop() -> str | None:
        if interrupted:
            return interrupted[0]
        if deadline is not None and time.monotonic() >= deadline:
            return f"time budget of {max_duration} used up"
        return None

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.append, f"interrupted by {signal.Signals(signum).name}")

    write = sys.stdout.write  # a listing can be 100,000 lines: click.echo costs 3 us a line more

    def say(line: str) -> None:
        if not quiet:
            write(line + "\n")

    progress_bar = terminal_bar("{task.description}", quiet, elapsed=True)
    tasks: dict[str, object] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if progress_bar is None:
            return
        if phase not in tasks:
            tasks[phase] = progress_bar.add_task(phase, total=total or None)
        progress_bar.update(tasks[phase], completed=done, total=total or None)  # type: ignore[arg-type]

    try:
        if progress_bar is not None:
            progress_bar.start()
        try:
            outcome = await registry.gc.run(options, say, progress, should_stop)
        finally:
            if progress_bar is not None:
                progress_bar.stop()
    except GCBusy as exc:
        click.echo(f"wharf garbage-collect: {exc}", err=True)
        return 2
    except Exception as exc:
        click.echo(f"wharf garbage-collect: failed: {type(exc).__name__}: {exc}", err=True)
        return 1
    finally:
        await registry.close()
    click.echo(summary(outcome, time.monotonic() - started))
    return 0
