"""The S3 blob store: Distribution's key layout in a bucket, uploads resumable on any replica.

Layout under ``rootdirectory`` (see paths.py for the blob keys)::

    docker/registry/v2/blobs/sha256/ab/<hex>/data      the blob
    wharf/uploads/<id>/startedat                       marks the upload as existing
    wharf/uploads/<id>/parts/<offset, 20 digits>       one object per request that wrote to it

Each write request spools its body to a local file (hashed as it arrives), then stores it
as the part at the upload's current end with ``If-None-Match: *``: when two replicas write
at the same offset only one part lands and the other request is told the upload is busy.
Nothing of a failed or short request reaches the bucket. Completing copies the parts into
the blob key inside the bucket (server-side when the parts allow it).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .base import (
    Accept,
    BodyTooLarge,
    LengthMismatch,
    OffsetMismatch,
    PendingMultipart,
    StagedUpload,
    StoredBlob,
    UploadBusy,
    UploadMissing,
)
from .budget import ByteBudget
from .paths import BLOBS, UPLOADS, blob_path
from .s3parts import PartWriter
from .streams import pipeline, result, settle, submit

T = TypeVar("T")
Parts = list[tuple[int, int, str]]  # (offset, size, key); named here, where `list` is still the builtin
Objects = list[dict[str, Any]]
Keys = list[str]
READ_CHUNK = 2 << 20
MAX_SINGLE_PUT = 5 << 30
MIN_MULTIPART = 5 << 20
# Bytes of parts in memory at once, across every upload of the process (see budget.py): a
# single push needs about 32 MiB of it for full speed, and 200 at once share the rest.
PART_BUDGET = 256 << 20
# A presigned URL is handed out again while it keeps at least 3/4 of the validity asked for
# (botocore's signing costs about 160 us of CPU per URL); the most recent ones are kept.
PRESIGN_REUSE = 0.25
PRESIGNED_KEPT = 4096
# S3's most keys per DeleteObjects, and per page of a listing.
DELETE_BATCH = 1000
ATTEMPTS = 3  # botocore's retries of one request (its "max_attempts": 4 tries in all)
BACKOFF = 25.0  # the most botocore sleeps between two tries (20 s, or a Retry-After up to 25 s)
LIST_PAGE = 1000
log = logging.getLogger(__name__)


PROCESS_BUDGET = ByteBudget(PART_BUDGET)


class _Rejected(Exception):
    """The caller did not accept the bytes received (wrong digest)."""


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}


class S3BlobStore:
    def __init__(
        self,
        bucket: str,
        *,
        region: str = "us-east-1",
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        root: str = "",
        path_style: bool = False,
        verify: bool = True,
        spool_directory: str | None = None,
        timeout: float = 60,
        list_page_size: int = LIST_PAGE,
        budget: ByteBudget | None = None,
    ) -> None:
        self.bucket = bucket
        # How long a request the client gave up on (or retried) may still reach the store
        # and be carried out: connecting and sending, twice over. A deletion that had such
        # an attempt holds its caller's critical section this long before it returns.
        self.delete_settle = 4.0 * timeout
        self.timeout = timeout
        # Shared by every store of the process unless a test brings its own; its counters
        # (in_use, peak) tell how many part bytes were held at once.
        self.budget = budget or PROCESS_BUDGET
        self.list_page_size = list_page_size  # keys per listing request (a test makes it small)
        self.root = root.strip("/")
        self.spool_directory = spool_directory or tempfile.gettempdir()
        self.client = boto3.client(
            "s3",
            region_name=region,
            endpoint_url=endpoint or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            verify=verify,
            config=Config(
                # SigV4 for presigned redirects too: newer regions refuse the old signature.
                signature_version="s3v4",
                s3={"addressing_style": "path" if path_style else "auto", "payload_signing_enabled": False},
                # Wharf verifies every blob by its sha256 digest; botocore's extra CRC32 pass
                # over each body cost a fifth of a streamed pull's CPU.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=32,
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": ATTEMPTS, "mode": "standard"},
            ),
        )
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="wharf-s3")
        # (digest, expires) -> (monotonic time before signing, URL); touched on the loop only.
        self._presigned: OrderedDict[tuple[str, int], tuple[float, str]] = OrderedDict()

    def local_directories(self) -> Sequence[Path]:
        return [Path(self.spool_directory)]

    # -- plumbing ---------------------------------------------------------------------------

    def _key(self, relative: object) -> str:
        return f"{self.root}/{relative}" if self.root else str(relative)

    def _blob(self, digest: str) -> str:
        return self._key(blob_path(digest))

    def _upload(self, upload_id: str) -> str:
        return self._key(UPLOADS / upload_id)

    async def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(call, *args, **kwargs))

    async def _settled(self, call: Callable[..., T], *args: Any) -> T:
        """Like ``_run``, but a cancelled caller still waits for the thread's request to end
        before the cancellation goes on (deletions must not outlive their caller's section)."""
        running = self._pool.submit(call, *args)
        try:
            return await asyncio.wrap_future(running)
        finally:
            await settle(running)

    async def _size(self, key: str) -> int | None:
        try:
            head = await self._run(self.client.head_object, Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _missing(error):
                return None
            raise
        return int(head["ContentLength"])

    def _list(self, prefix: str) -> Objects:
        objects: Objects = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))
        return objects

    async def _parts(self, upload_id: str) -> Parts:
        """(offset, size, key) of the upload's parts, in order; raises UploadMissing."""
        if await self._size(f"{self._upload(upload_id)}/startedat") is None:
            raise UploadMissing(upload_id)
        listed = await self._run(self._list, f"{self._upload(upload_id)}/parts/")
        parts = sorted((int(o["Key"].rsplit("/", 1)[1]), int(o["Size"]), o["Key"]) for o in listed)
        expected = 0
        for offset, size, _key in parts:
            if offset != expected:  # a gap means a part was lost: never hand out such an upload
                raise UploadMissing(upload_id)
            expected += size
        return parts

    # -- blobs ------------------------------------------------------------------------------

    async def stat(self, digest: str) -> int | None:
        return await self._size(self._blob(digest))

    async def open(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes] | None:
        # The GET itself tells whether the blob is there: no HEAD before it.
        try:
            body = await self._get(self._blob(digest), start, end)
        except ClientError as error:
            if _missing(error):
                return None
            raise
        return self._stream(body)

    async def _get(self, key: str, start: int = 0, end: int | None = None) -> Any:
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        return (await self._run(self.client.get_object, **request))["Body"]

    async def _read_part(self, upload_id: str, key: str) -> AsyncIterator[bytes]:
        """An upload's part; gone (a cancel on another replica) means the upload is gone."""
        try:
            body = await self._get(key)
        except ClientError as error:
            if _missing(error):
                raise UploadMissing(upload_id) from None
            raise
        async for chunk in self._stream(body):
            yield chunk

    async def _stream(self, body: Any) -> AsyncIterator[bytes]:
        # The next block is read from the store while this one goes to the client.
        reading = submit(body.read, READ_CHUNK)
        try:
            while chunk := await result(reading):
                reading = submit(body.read, READ_CHUNK)
                yield chunk
        finally:
            try:
                await settle(reading)  # before the body closes under the reading thread
            finally:
                body.close()

    async def url(self, digest: str, expires: int) -> str | None:
        now = time.monotonic()
        cache = self._presigned
        kept = cache.get((digest, expires))
        if kept is not None and now - kept[0] < expires * PRESIGN_REUSE:
            cache.move_to_end((digest, expires))
            return kept[1]
        signed: str = await self._run(
            self.client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._blob(digest)},
            ExpiresIn=expires,
        )
        cache[(digest, expires)] = (now, signed)  # the time before signing: never younger than it is
        cache.move_to_end((digest, expires))
        while len(cache) > PRESIGNED_KEPT:
            cache.popitem(last=False)
        return signed

    async def delete(self, digest: str) -> bool:
        key = self._blob(digest)
        if await self._size(key) is None:
            return False
        await self._run(self.client.delete_object, Bucket=self.bucket, Key=key)
        return True

    def delete_lease(self, count: int) -> float:
        # Each request: every attempt connecting and reading to its timeout, with botocore's
        # back-off between; then as long again as the last one may take to arrive.
        requests = max(1, -(-count // DELETE_BATCH))
        attempts = int(self.client.meta.config.retries.get("total_max_attempts", ATTEMPTS + 1))
        one = attempts * 2 * self.timeout + (attempts - 1) * BACKOFF
        return requests * one + self.delete_settle

    @property
    def delete_tail(self) -> float:
        return self.delete_settle  # a request already sent may still arrive this long after

    async def delete_many(self, digests: Sequence[str]) -> set[str]:
        by_key = {self._blob(digest): digest for digest in digests}
        keys = list(by_key)
        failed: set[str] = set()
        uncertain = False
        try:
            for start in range(0, len(keys), DELETE_BATCH):
                batch = keys[start : start + DELETE_BATCH]
                try:
                    not_deleted, retried = await self._settled(self._delete_batch, batch)
                    failed.update(not_deleted)
                    uncertain = uncertain or retried
                except Exception as error:  # the request itself failed, after botocore's retries
                    log.warning("could not delete %d blobs: %s", len(batch), error)
                    failed.update(batch)
                    uncertain = True
        except asyncio.CancelledError:
            # Cancelled with a request under way, whose answer was not read: as unanswered.
            await _through(asyncio.sleep(self.delete_settle))
            raise
        if uncertain:
            # An attempt that got no answer (timed out, cut off, or answered 5xx and retried)
            # may still be carried out by the store: were the caller's section to end now, a
            # push of one of these digests could store its bytes, and that late request
            # delete them under its new row. So this returns (or raises, when cancelled
            # meanwhile) only once it cannot arrive.
            log.warning(
                "a delete request went unanswered: waiting %.0f s before going on", self.delete_settle
            )
            await _through(asyncio.sleep(self.delete_settle))
        return {by_key[key] for key in failed}

    async def _objects(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        """The objects under ``prefix``, in key order, one page at a time (each fetched off
        the event loop): memory stays bounded by a page whatever the bucket holds."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.list_page_size}
            )
        )
        while (page := await self._run(_next_page, pages)) is not None:
            for item in page.get("Contents", []):
                yield item

    async def list(self) -> AsyncIterator[str]:
        prefix = self._key(BLOBS) + "/"
        async for item in self._objects(prefix):
            parts = item["Key"][len(prefix) :].split("/")
            if len(parts) == 4 and parts[3] == "data":
                yield f"{parts[0]}:{parts[2]}"

    async def describe(self, digest: str) -> StoredBlob | None:
        try:
            head = await self._run(self.client.head_object, Bucket=self.bucket, Key=self._blob(digest))
        except ClientError as error:
            if _missing(error):
                return None
            raise
        return StoredBlob(digest, int(head["ContentLength"]), head["LastModified"])

    # -- uploads ----------------------------------------------------------------------------

    async def store_blob(
        self,
        digest: str,
        chunks: AsyncIterable[bytes],
        observe: Callable[[bytes], object],
        accept: Accept,
    ) -> int | None:
        """Streamed straight into a multipart upload of the blob's own key, parts sent while
        the next bytes arrive (their memory taken from the process's budget); only
        completing it makes the object exist, so a blob whose digest does not match is
        aborted and never seen."""
        key = self._blob(digest)
        started = await self._run(self.client.create_multipart_upload, Bucket=self.bucket, Key=key)
        multipart = started["UploadId"]
        writer = self._writer(key, multipart, observe)
        published = False

        async def publish() -> None:
            nonlocal published
            await self._run(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=multipart,
                MultipartUpload={"Parts": done},
            )
            published = True

        try:
            try:
                async for chunk in chunks:
                    await writer.write(chunk)
                done = await writer.finish()
            finally:
                # Parts still being sent could outlive an abort: wait for them first.
                await writer.close()
            await accept(writer.size, publish)
            if not published:
                raise _Rejected
            return writer.size
        except BaseException as error:
            if published:  # the blob is whole and visible (the caller was cancelled after)
                raise
            await self._run(
                self.client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=multipart
            )
            if isinstance(error, _Rejected):
                return None
            raise

    def _writer(
        self, key: str, multipart: str, observe: Callable[[bytes], object] | None = None
    ) -> PartWriter:
        return PartWriter(self.client, self._pool, self.budget, self.bucket, key, multipart, observe)

    async def create_upload(self, upload_id: str) -> None:
        await self._run(
            self.client.put_object, Bucket=self.bucket, Key=f"{self._upload(upload_id)}/startedat", Body=b""
        )

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterable[bytes],
        observe: Callable[[bytes], object] | None = None,
        length: int | None = None,
    ) -> int:
        parts = await self._parts(upload_id)
        size = sum(part[1] for part in parts)
        if size != offset:
            raise OffsetMismatch(offset, size)
        if length is not None and length > MAX_SINGLE_PUT:
            raise BodyTooLarge(MAX_SINGLE_PUT)
        with tempfile.TemporaryFile(dir=self.spool_directory) as spool:

            def write(batch: list[bytes]) -> None:
                for chunk in batch:
                    if observe is not None:
                        observe(chunk)
                    spool.write(chunk)
                if spool.tell() > MAX_SINGLE_PUT:
                    raise BodyTooLarge(MAX_SINGLE_PUT)

            await pipeline(chunks, write)
            written = spool.tell()
            if length is not None and written != length:
                raise LengthMismatch(length, written)
            if not written:
                return offset
            if written > MAX_SINGLE_PUT:
                raise BodyTooLarge(MAX_SINGLE_PUT)
            spool.seek(0)
            key = f"{self._upload(upload_id)}/parts/{offset:020d}"
            try:
                await self._run(
                    self.client.put_object,
                    Bucket=self.bucket,
                    Key=key,
                    Body=spool,
                    ContentLength=written,
                    IfNoneMatch="*",
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                    raise UploadBusy(upload_id) from None
                raise
        return offset + written

    async def read_upload(self, upload_id: str) -> AsyncIterator[bytes]:
        for _offset, _size, key in await self._parts(upload_id):
            async for chunk in self._read_part(upload_id, key):
                yield chunk

    async def commit_upload(self, upload_id: str, digest: str, size: int) -> None:
        parts = await self._parts(upload_id)
        total = sum(part[1] for part in parts)
        if total != size:
            raise OffsetMismatch(size, total)
        target = self._blob(digest)
        if await self._size(target) != size:
            try:
                await self._assemble(upload_id, parts, target)
            except ClientError as error:
                if _missing(error):
                    raise UploadMissing(upload_id) from None
                raise
        # Only what was verified and copied goes, then the marker: a part another replica
        # stored meanwhile is its request's to clean up (it finds the row gone).
        await self._delete_keys([key for _offset, _size, key in parts])
        await self._delete_keys([f"{self._upload(upload_id)}/startedat"])

    async def _assemble(self, upload_id: str, parts: Parts, target: str) -> None:
        if not parts:
            await self._run(self.client.put_object, Bucket=self.bucket, Key=target, Body=b"")
            return
        if len(parts) == 1 and parts[0][1] <= MAX_SINGLE_PUT:
            source = {"Bucket": self.bucket, "Key": parts[0][2]}
            await self._run(self.client.copy_object, Bucket=self.bucket, Key=target, CopySource=source)
            return
        started = await self._run(self.client.create_multipart_upload, Bucket=self.bucket, Key=target)
        multipart = started["UploadId"]
        try:
            done = await self._copy_parts(upload_id, parts, target, multipart)
            await self._run(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=target,
                UploadId=multipart,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            await self._run(
                self.client.abort_multipart_upload, Bucket=self.bucket, Key=target, UploadId=multipart
            )
            raise

    async def _copy_parts(self, upload_id: str, parts: Parts, target: str, multipart: str) -> Objects:
        """Server-side copies when every part but the last is big enough for S3; otherwise
        the bytes pass through here, in pieces of at least the minimum part size."""
        done: Objects = []
        if all(size >= MIN_MULTIPART for _offset, size, _key in parts[:-1]):
            for _offset, _size, key in parts:
                result = await self._run(
                    self.client.upload_part_copy,
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=multipart,
                    PartNumber=len(done) + 1,
                    CopySource={"Bucket": self.bucket, "Key": key},
                )
                done.append({"PartNumber": len(done) + 1, "ETag": result["CopyPartResult"]["ETag"]})
            return done
        writer = self._writer(target, multipart)
        try:
            for _offset, _size, key in parts:
                async for chunk in self._read_part(upload_id, key):
                    await writer.write(chunk)
            return await writer.finish()
        finally:
            await writer.close()

    async def delete_upload(self, upload_id: str) -> None:
        await self._delete_keys(
            [item["Key"] for item in await self._run(self._list, f"{self._upload(upload_id)}/")]
        )

    async def list_uploads(self) -> AsyncIterator[StagedUpload]:
        # Keys come in order, so an upload's objects (all under "<id>/") come together: each
        # upload is handed out once its last object is seen, and only one is held at a time.
        prefix = self._key(UPLOADS) + "/"
        current: StagedUpload | None = None
        async for item in self._objects(prefix):
            upload_id = item["Key"][len(prefix) :].split("/", 1)[0]
            if current is not None and current.id != upload_id:
                yield current
                current = None
            if current is None:
                current = StagedUpload(upload_id, 0, item["LastModified"])
            current = StagedUpload(
                upload_id, current.size + int(item["Size"]), max(current.modified, item["LastModified"])
            )
        if current is not None:
            yield current

    def _multipart(self, prefix: str) -> Objects:
        pending: Objects = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            pending.extend(page.get("Uploads", []))
        return pending

    def _multipart_parts(self, key: str, multipart: str) -> Objects:
        parts: Objects = []
        paginator = self.client.get_paginator("list_parts")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=multipart):
                parts.extend(page.get("Parts", []))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"NoSuchUpload", "404"}:
                return []  # completed or aborted meanwhile
            raise
        return parts

    async def stale_multipart(self, before: datetime) -> Sequence[PendingMultipart]:
        """Wharf starts multipart uploads on blob keys (a streamed push, the assembly of an
        upload's parts); a process that died in between leaves their parts, which the bucket
        keeps (and bills) until they are aborted. Uploads' own prefix is looked at too."""
        uploads = self._key(UPLOADS) + "/"
        stale: list[PendingMultipart] = []
        for prefix in (uploads, self._key(BLOBS) + "/"):
            for item in await self._run(self._multipart, prefix):
                if item["Initiated"] >= before:
                    continue
                parts = await self._run(self._multipart_parts, item["Key"], item["UploadId"])
                last = max([item["Initiated"], *(part["LastModified"] for part in parts)])
                if last >= before:
                    continue  # still being written
                key: str = item["Key"]
                owner = key[len(uploads) :].split("/", 1)[0] if key.startswith(uploads) else None
                stale.append(
                    PendingMultipart(
                        key=key,
                        multipart_id=item["UploadId"],
                        upload_id=owner or None,
                        initiated=item["Initiated"],
                        last_activity=last,
                        size=sum(int(part["Size"]) for part in parts),
                    )
                )
        return stale

    async def abort_multipart(self, pending: PendingMultipart) -> None:
        try:
            await self._run(
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=pending.key,
                UploadId=pending.multipart_id,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in {"NoSuchUpload", "404"}:
                raise

    def _delete_batch(self, keys: Keys) -> tuple[Keys, bool]:
        """One DeleteObjects request: the keys it could not delete, and whether botocore had
        to retry it (an earlier attempt may still be carried out). S3 answers 200 and names
        each key that failed in the body; a key already gone is no error."""
        answer = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
        )
        failed: Keys = []
        for error in answer.get("Errors", []):
            if error.get("Code") == "NoSuchKey":
                continue
            log.warning("could not delete %s: %s %s", error["Key"], error.get("Code"), error.get("Message"))
            failed.append(error["Key"])
        return failed, int(answer.get("ResponseMetadata", {}).get("RetryAttempts", 0)) > 0

    async def _delete_keys(self, keys: Keys) -> None:
        """An upload's objects: a key that failed is left for upload purging to find."""
        for start in range(0, len(keys), DELETE_BATCH):
            await self._run(self._delete_batch, keys[start : start + DELETE_BATCH])


async def _through(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work`` to its end even through cancellation, which is passed on after."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def _next_page(pages: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
    return next(pages, None)
