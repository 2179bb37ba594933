"""A budget of bytes held in memory at once, shared by every upload of a process.

A limit per upload is no limit: 200 concurrent 64 MiB pushes to S3, each allowed three
16 MiB parts in flight plus the one filling, held their whole bodies (12.8 GiB resident),
the parts waiting in the thread pool's queue. With one budget per process, an upload takes
its part's bytes before it receives them; when the budget is spent it waits, so it stops
reading its request body and TCP makes the client wait in turn.

Bytes are taken on an event loop and may be given back from any thread (a part's bytes
go back once the thread sending it is done), so the waiters are futures woken through
their own loop, and the counters are kept under a lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Waiter:
    size: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None] = field(repr=False)


class ByteBudget:
    """At most ``limit`` bytes taken at once; takers wait their turn, first come first served."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"a budget of {limit} bytes")
        self.limit = limit
        self._lock = threading.Lock()
        self._used = 0
        self._peak = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def in_use(self) -> int:
        return self._used

    @property
    def peak(self) -> int:
        """The most bytes ever taken at once (since the last ``reset_peak``)."""
        return self._peak

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self._used

    async def take(self, size: int) -> int:
        """Take ``size`` bytes (at most the whole budget), waiting while they are not there;
        the answer is what was taken, to be given back with ``give``."""
        size = max(0, min(size, self.limit))
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._waiters and self._used + size <= self.limit:
                self._grant(size)
                return size
            waiter = _Waiter(size, loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:  # not granted: nothing to give back
                    self._waiters.remove(waiter)
                    self._wake()  # it may have been holding up smaller ones behind it
                    raise
            # Granted as it was cancelled: the grant's callback finds the future cancelled
            # and gives the bytes back.
            raise
        return size

    def give(self, size: int) -> None:
        """Give back bytes taken; callable from any thread."""
        with self._lock:
            self._used -= size
            self._wake()

    def _grant(self, size: int) -> None:
        self._used += size
        self._peak = max(self._peak, self._used)

    def _wake(self) -> None:
        # Under the lock: the bytes of each waiter in turn are taken here, for it.
        while self._waiters and self._used + self._waiters[0].size <= self.limit:
            waiter = self._waiters.popleft()
            self._grant(waiter.size)
            try:
                waiter.loop.call_soon_threadsafe(self._granted, waiter)
            except RuntimeError:  # its loop is closed: nobody is waiting any more
                self._used -= waiter.size

    def _granted(self, waiter: _Waiter) -> None:
        if waiter.future.cancelled():
            self.give(waiter.size)
        else:
            waiter.future.set_result(None)
