"""Thread work over streamed bytes: a cancelled request never leaves a thread at work behind it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from wharf.storage.streams import pipeline


async def test_cancelled_pipeline_returns_only_after_its_thread_is_done():
    started, finished = threading.Event(), threading.Event()

    def work(batch: list[bytes]) -> None:
        started.set()
        time.sleep(0.5)
        finished.set()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50):  # more than the pipeline holds: it waits on the thread
            yield b"x"
        await asyncio.sleep(30)

    running = asyncio.create_task(pipeline(chunks(), work))
    deadline = time.monotonic() + 60
    while not started.is_set():  # cancelled while its thread is at work
        assert time.monotonic() < deadline, "the pipeline never started its thread"
        await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    # The caller truncates or closes right after this: the thread must be over by now.
    assert finished.is_set()


async def test_pipeline_works_every_chunk_in_order():
    seen: list[bytes] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(100):
            yield bytes([i])
            if i % 7 == 0:
                await asyncio.sleep(0)

    await pipeline(chunks(), seen.extend)
    assert seen == [bytes([i]) for i in range(100)]
