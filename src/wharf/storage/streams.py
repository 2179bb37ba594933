"""Thread work over streamed bytes, shared by the stores: receiving a request body while a
thread works on what has arrived, and reading ahead while a response goes out.

Work is handed to threads as `concurrent.futures.Future`s, never awaited directly: a
cancelled request must still wait for the thread before the file or body it uses is
truncated or closed (`settle`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Bytes received while the previous batch is still being worked on. A bound in bytes, not
# chunks: granian hands out chunks of up to about 400 KiB when the app reads slower than the
# client sends, and 200 concurrent uploads each holding 8 of those (and 8 more being
# written) would be 1.3 GiB.
PIPELINE_BYTES = 1 << 20
_threads = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="wharf-io")


def submit(call: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
    return _threads.submit(call, *args)


async def result(future: concurrent.futures.Future[T]) -> T:
    """The thread's result; a cancelled caller stops waiting but the thread's work goes on
    (unless it had not started), so whoever cleans up must `settle` it first."""
    return await asyncio.wrap_future(future)


async def settle(future: concurrent.futures.Future[Any]) -> None:
    """Wait until the thread's work is over, even through repeated cancellation of the
    caller (re-raised once it is over). The work's own error is not raised here."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break
    if cancelled:
        raise asyncio.CancelledError


async def pipeline(chunks: AsyncIterable[bytes], work: Callable[[list[bytes]], None]) -> None:
    """Run ``work`` on a thread over batches of ``chunks`` while the next batch is received.

    One batch is in flight at a time, so batches are worked in order; the event loop only
    receives. Measured on a 512 MiB push: hashing and writing overlap the receiving instead
    of taking turns with it.
    """
    in_flight: concurrent.futures.Future[None] | None = None
    pending: list[bytes] = []
    held = 0  # bytes in pending
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            pending.append(chunk)
            held += len(chunk)
            if in_flight is not None and not in_flight.done() and held < PIPELINE_BYTES:
                continue
            if in_flight is not None:
                await asyncio.shield(asyncio.wrap_future(in_flight))
                in_flight.result()
            in_flight, pending, held = submit(work, pending), [], 0
        if in_flight is not None:
            await asyncio.shield(asyncio.wrap_future(in_flight))
            in_flight.result()
        if pending:
            in_flight = submit(work, pending)
            await asyncio.shield(asyncio.wrap_future(in_flight))
            in_flight.result()
    finally:
        if in_flight is not None:
            await settle(in_flight)
