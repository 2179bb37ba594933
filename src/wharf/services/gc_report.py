"""What a garbage collection run says about itself beyond what it freed: what a dry run
would free, and what only the grace period kept and when that becomes collectable. The
same figures for the CLI's summary, a job's log and result, and the history of runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..meta.gc import GCRun
from .fsck import human_bytes

# How a user runs it again without a grace period, by where the run was started.
CLI_ZERO_GRACE = "run with --grace 0s"
JOB_ZERO_GRACE = 'start a registryGC job with "graceSeconds": 0'


def grace_text(seconds: float) -> str:
    """A grace period as the configuration and --grace write it: 24h, 90m, 45s."""
    whole = int(seconds)
    if whole and whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole and whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{seconds:g}s"


def minute_after(moment: datetime) -> datetime:
    """The first whole minute at or after ``moment``: "collectable after" it is true."""
    whole = moment.replace(second=0, microsecond=0)
    return whole if whole == moment else whole + timedelta(minutes=1)


def grace_kept_line(run: GCRun, zero_grace: str = CLI_ZERO_GRACE) -> str | None:
    """``12 blobs (38.2 MiB) kept: pushed within the grace period (24h); collectable after
    2026-12-02 14:05 UTC, or run with --grace 0s``; None when the grace period kept nothing."""
    if not run.grace_kept_blobs:
        return None
    line = (
        f"{run.grace_kept_blobs} blobs ({human_bytes(run.grace_kept_bytes)}) kept: pushed within the "
        f"grace period ({grace_text(run.grace_seconds)})"
    )
    if run.grace_kept_until is not None:
        line += f"; collectable after {minute_after(run.grace_kept_until):%Y-%m-%d %H:%M} UTC"
    return f"{line}, or {zero_grace}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else minute_after(moment).isoformat().replace("+00:00", "Z")


def would_free(run: GCRun) -> dict[str, int] | None:
    """A dry run's plan: what the same run, not dry, would delete. None for a real run."""
    if not run.dry_run:
        return None
    return {"blobs": run.blobs_eligible, "manifests": run.manifests_eligible, "bytes": run.bytes_eligible}


def kept_by_grace(run: GCRun) -> dict[str, Any]:
    """What only the grace period kept: blobs, bytes, and when they are collectable (UTC)."""
    return {
        "blobs": run.grace_kept_blobs,
        "bytes": run.grace_kept_bytes,
        "collectableAfter": _iso(run.grace_kept_until) if run.grace_kept_blobs else None,
    }
