"""Purging abandoned uploads, as Distribution's ``storage.maintenance.uploadpurging`` does.

An upload is abandoned when no request wrote to it for ``age`` (its row's ``updated_at``).
Its row goes first, by a conditional delete (a request that wrote meanwhile keeps it), then
its staged bytes: a request still writing on another replica finds the row gone and
answers BLOB_UPLOAD_UNKNOWN. Staged bytes that no row knows (a crash between the two
deletions) go too once they are as old, and so do multipart uploads that an interrupted
process left in the bucket, which hold their parts until someone aborts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ..meta.blobs import BlobRows
from ..meta.clock import now as utc_now
from ..storage.base import BlobStore, StagedUpload
from .uploads import UploadService


class Say(Protocol):
    def __call__(self, line: str, listed: bool = False) -> None:
        """One line of the report; ``listed`` lines (one per item) may be cut short."""


def _never() -> str | None:
    return None


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class PurgeReport:
    cutoff: datetime
    dry_run: bool
    uploads_purged: int = 0
    bytes_freed: int = 0
    multipart_aborted: int = 0
    kept_in_use: int = 0
    stopped: str | None = None  # why it ended before the end

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "uploadsPurged": self.uploads_purged,
            "bytesFreed": self.bytes_freed,
            "multipartAborted": self.multipart_aborted,
            "dryRun": self.dry_run,
        }
        if self.stopped is not None:
            result.update(status="stopped", reason=self.stopped)
        return result


class UploadPurger:
    def __init__(
        self,
        rows: BlobRows,
        storage: BlobStore,
        uploads: UploadService,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.rows = rows
        self.storage = storage
        self.uploads = uploads
        self.clock = clock  # what "idle for ``age``" is measured from (a test moves it)

    async def run(
        self,
        age: timedelta,
        dry_run: bool,
        say: Say,
        should_stop: Callable[[], str | None] = _never,
    ) -> PurgeReport:
        report = PurgeReport(self.clock() - age, dry_run)
        cutoff = report.cutoff
        verb = "would purge" if dry_run else "purged"
        say(
            f"purging uploads idle since before {_at(cutoff)} (age {age})" + (" (dry run)" if dry_run else "")
        )
        # Storage first: whatever is staged after this listing is younger than the cutoff.
        staged: dict[str, StagedUpload] = {item.id: item async for item in self.storage.list_uploads()}
        for upload in await self.rows.idle_uploads(cutoff):
            report.stopped = should_stop()
            if report.stopped is not None:
                return self._end(report, say)
            item = staged.pop(upload.id, None)
            size = item.size if item is not None else 0
            if dry_run:
                purged = not self.uploads.in_use(upload.id)
            else:
                purged = await self.uploads.purge(upload.id, cutoff)
            if not purged:
                report.kept_in_use += 1
                say(f"upload {upload.id} in {upload.repository}: written to meanwhile or in use, kept")
                continue
            report.uploads_purged += 1
            report.bytes_freed += size
            say(
                f"{verb} upload {upload.id} in {upload.repository}: {size} bytes, "
                f"last written {_at(upload.updated_at)}",
                listed=True,
            )
        for item in staged.values():
            if item.modified >= cutoff:
                continue
            report.stopped = should_stop()
            if report.stopped is not None:
                return self._end(report, say)
            if dry_run:
                purged = not self.uploads.in_use(item.id) and await self.rows.get_upload(item.id) is None
            else:
                purged = await self.uploads.purge_staged(item.id)
            if purged:
                report.uploads_purged += 1
                report.bytes_freed += item.size
                say(
                    f"{verb} staged data of upload {item.id} (no upload row): {item.size} bytes, "
                    f"last written {_at(item.modified)}",
                    listed=True,
                )
        for pending in await self.storage.stale_multipart(cutoff):
            report.stopped = should_stop()
            if report.stopped is not None:
                return self._end(report, say)
            if pending.upload_id is not None and await self.rows.get_upload(pending.upload_id) is not None:
                continue  # an upload in progress knows it
            if not dry_run:
                await self.storage.abort_multipart(pending)
            report.multipart_aborted += 1
            report.bytes_freed += pending.size
            say(
                f"{'would abort' if dry_run else 'aborted'} multipart upload of {pending.key}: "
                f"{pending.size} bytes, started {_at(pending.initiated)}",
                listed=True,
            )
        return self._end(report, say)

    def _end(self, report: PurgeReport, say: Say) -> PurgeReport:
        done = "would free" if report.dry_run else "freed"
        say(
            f"{report.uploads_purged} uploads {'to purge' if report.dry_run else 'purged'}, "
            f"{report.multipart_aborted} multipart uploads {'to abort' if report.dry_run else 'aborted'}, "
            f"{done} {report.bytes_freed} bytes"
            + (f", {report.kept_in_use} kept (in use)" if report.kept_in_use else "")
            + (f"; stopped: {report.stopped}" if report.stopped else "")
        )
        return report
