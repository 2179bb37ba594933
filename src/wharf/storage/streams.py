"""Receiving a request body while a thread works on what has arrived: shared by the stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from typing import Any

# Chunks received while the previous batch is still being worked on.
PIPELINE_DEPTH = 8


async def pipeline(chunks: AsyncIterable[bytes], work: Callable[[list[bytes]], None]) -> None:
    """Run ``work`` on a thread over batches of ``chunks`` while the next batch is received.

    One batch is in flight at a time, so batches are worked in order; the event loop only
    receives. Measured on a 512 MiB push: hashing and writing overlap the receiving instead
    of taking turns with it.
    """
    loop = asyncio.get_running_loop()
    in_flight: asyncio.Future[None] | None = None
    pending: list[bytes] = []
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            pending.append(chunk)
            if in_flight is not None and not in_flight.done() and len(pending) < PIPELINE_DEPTH:
                continue
            if in_flight is not None:
                await in_flight
            in_flight, pending = loop.run_in_executor(None, work, pending), []
    finally:
        if in_flight is not None:
            await settle(in_flight)
    if pending:
        await loop.run_in_executor(None, work, pending)


async def settle(future: asyncio.Future[Any]) -> None:
    """Wait until a thread's work is over, even through repeated cancellation: the caller
    is about to truncate or close the file that thread writes."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break
    if cancelled:
        raise asyncio.CancelledError
    future.result()
