"""Slowing down password guessing: after ``LIMIT`` failed logins in ``WINDOW`` for one account
name or from one client address, further logins for it are answered 429 ``TOOMANYREQUESTS``
(with ``Retry-After``) until the oldest failure leaves the window, right or wrong password
alike, so that guessing on cannot tell them apart.

The count is kept in each process (a replica counts its own), which bounds a guesser to
``LIMIT`` tries a minute per replica; it holds no password and no account facts."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import TOOMANYREQUESTS, RegistryError
from .access import Refused

T = TypeVar("T")

LIMIT = 10
WINDOW = 60.0
# Keys followed at once; past it the oldest are forgotten (a flood of made-up names must not
# grow the process without bound).
MAX_KEYS = 100_000
MAX_USER = 256


class TooManyLogins(RegistryError):
    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(
            TOOMANYREQUESTS,
            {"retryAfter": retry_after},
            f"too many failed logins {what}: try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


class LoginLimiter:
    def __init__(
        self, limit: int = LIMIT, window: float = WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    @staticmethod
    def _keys(user: str, peer: str | None) -> list[tuple[str, str]]:
        # Account names are far shorter: a longer one is no account, and must not make
        # each followed key that long.
        user = user[:MAX_USER]
        keys = [(f"user:{user}", f"for {user!r}")]
        if peer:
            keys.append((f"addr:{peer}", f"from {peer}"))
        return keys

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and now - times[0] >= self._window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def check(self, user: str, peer: str | None) -> None:
        """Raise ``TooManyLogins`` when logins for ``user`` or from ``peer`` are paused."""
        now = self._clock()
        for key, what in self._keys(user, peer):
            times = self._recent(key, now)
            if times is not None and len(times) >= self._limit:
                wait = max(1, math.ceil(self._window - (now - times[0])))
                raise TooManyLogins(what, wait)

    def failed(self, user: str, peer: str | None) -> None:
        now = self._clock()
        for key, _what in self._keys(user, peer):
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= MAX_KEYS:
                    del self._failures[next(iter(self._failures))]
                times = self._failures[key] = deque(maxlen=self._limit)
            times.append(now)

    async def attempt(self, user: str, peer: str | None, prove: Callable[[], Awaitable[T | None]]) -> T:
        """What ``prove()`` (checking ``user``'s credentials) proves; ``TooManyLogins`` while
        logins for ``user`` or from ``peer`` are paused, ``Refused`` (401) when the
        credentials prove nothing (a failure counted)."""
        self.check(user, peer)
        found = await prove()
        if found is None:
            self.failed(user, peer)
            raise Refused(False, f"wrong user name or password for {user!r}")
        return found
