"""Bytes streamed into one S3 multipart upload, in parts whose memory the process budgets.

Each part's bytes are taken from the store's budget (see budget.py) before the first of
them is received, copied into one buffer as they arrive, and sent from that same buffer (no
copy of it: botocore signs and sends a bytearray as it is); they are given back once the
part is sent. A few parts of one upload are in flight at once, so a single push keeps the
object store busy while its next part arrives.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .budget import ByteBudget
from .streams import settle, submit

T = TypeVar("T")

# S3's smallest part but the last is 5 MiB and an upload has at most 10,000 parts. 8 MiB
# parts keep the memory of each part in flight small; past every 2,000 parts the size
# doubles (up to 128 MiB), so a blob may reach about 500 GiB.
STREAM_PART = 8 << 20
DOUBLE_EVERY = 2000
MAX_PART = 128 << 20
# Parts of one upload being sent at once: one push alone keeps the store busy (measured on
# SeaweedFS: 3 in flight reach a single push's full speed), and no one push takes the
# whole budget.
PARTS_IN_FLIGHT = 3

Parts = list[dict[str, Any]]


def part_size(number: int) -> int:
    """The size of part ``number`` (counted from 1)."""
    return min(STREAM_PART << ((number - 1) // DOUBLE_EVERY), MAX_PART)


class _LastOut:
    """Calls ``then`` when the last of ``jobs`` thread jobs has ended, from inside that job:
    before its future is done, so whoever waits for the futures finds it called (a future's
    done-callbacks run only after its waiters are woken)."""

    def __init__(self, jobs: int, then: Callable[[], None]) -> None:
        self._left = jobs
        self._then = then
        self._lock = threading.Lock()

    def wrap(self, work: Callable[..., T]) -> Callable[..., T]:
        def job(*args: Any) -> T:
            try:
                return work(*args)
            finally:
                with self._lock:
                    self._left -= 1
                    last = self._left == 0
                if last:
                    self._then()

        return job


class PartWriter:
    """Writes chunks, in order, as the parts of multipart upload ``multipart`` of ``key``.

    ``observe`` (optional) sees every part's bytes in order, on a thread, while the part is
    sent. ``finish()`` sends the rest and answers the parts for completing the upload;
    whatever happens, ``close()`` must be awaited after: it waits for every part still being
    sent (an abort must not overtake them) and gives back the budget of the part filling.
    """

    def __init__(
        self,
        client: Any,
        pool: ThreadPoolExecutor,
        budget: ByteBudget,
        bucket: str,
        key: str,
        multipart: str,
        observe: Callable[[bytes], object] | None = None,
    ) -> None:
        self._client, self._pool, self._budget = client, pool, budget
        self._bucket, self._key, self._multipart = bucket, key, multipart
        self._observe = observe
        self._part: bytearray | None = None
        self._filled = 0
        self._held = 0  # budget taken for the part filling
        self._number = 0  # parts handed out so far
        self._sending: deque[Future[dict[str, Any]]] = deque()
        self._hashing: Future[object] | None = None
        self._done: Parts = []
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._part is None:
                wanted = part_size(self._number + 1)
                self._held = await self._budget.take(wanted)
                self._part = bytearray(wanted)
                self._filled = 0
            room = len(self._part) - self._filled
            piece = view[:room]
            self._part[self._filled : self._filled + len(piece)] = piece
            self._filled += len(piece)
            self.size += len(piece)
            view = view[len(piece) :]
            if self._filled == len(self._part):
                await self._send()

    async def finish(self) -> Parts:
        if self._part is not None or not self._number:
            if self._part is None:  # an empty blob: one empty part
                self._held = await self._budget.take(0)
                self._part = bytearray()
            del self._part[self._filled :]
            await self._send()
        while self._sending:
            await self._collect()
        if self._hashing is not None:
            await asyncio.wrap_future(self._hashing)
        return self._done

    async def close(self) -> None:
        running: list[Future[Any]] = list(self._sending)
        if self._hashing is not None:
            running.append(self._hashing)
        for future in running:
            await settle(future)
        if self._part is not None:
            self._part = None
            self._budget.give(self._held)
            self._held = 0

    async def _send(self) -> None:
        # One part hashed at a time, in order; the next part's bytes are meanwhile received.
        # Waited for while the part is still ours: cancelled here, close() gives it back.
        if self._hashing is not None:
            await asyncio.wrap_future(self._hashing)
        data, held = self._part, self._held
        assert data is not None
        self._part, self._held = None, 0
        self._number += 1
        # The buffer is free once both threads are done with it.
        free = _LastOut(1 if self._observe is None else 2, lambda: self._budget.give(held))
        if self._observe is not None:
            self._hashing = submit(free.wrap(self._observe), data)
        sending = self._pool.submit(free.wrap(self._upload_part), self._number, data)
        self._sending.append(sending)
        while len(self._sending) >= PARTS_IN_FLIGHT:
            await self._collect()

    async def _collect(self) -> None:
        self._done.append(await asyncio.wrap_future(self._sending[0]))
        self._sending.popleft()

    def _upload_part(self, number: int, data: bytearray) -> dict[str, Any]:
        result = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._multipart, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": result["ETag"]}
