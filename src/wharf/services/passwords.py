"""Passwords: argon2id hashes (argon2-cffi's defaults: RFC 9106's low-memory profile), a
minimum length, and a cache of verified passwords so that HTTP Basic on every request does
not pay argon2's cost (by design about 0.1 s) each time."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
_hasher = PasswordHasher()


class PasswordTooShort(ValueError):
    def __init__(self) -> None:
        super().__init__(f"password too short: it must have at least {MIN_LENGTH} characters")


def check_length(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordTooShort()


def hash_password(password: str) -> str:
    check_length(password)
    return _hasher.hash(password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


class Verifier:
    """Verifies passwords against stored hashes, remembering for ``ttl`` seconds the ones
    that matched. The cache is keyed by the stored hash and a digest of the password: a
    changed password (a new hash) misses it at once, and it holds no password. ``check``
    compares one password with one hash (argon2id here; bcrypt for htpasswd files)."""

    def __init__(
        self, ttl: float = 60.0, size: int = 1024, check: Callable[[str, str], bool] = _verify
    ) -> None:
        self._ttl = ttl
        self._size = size
        self._check = check
        self._matched: dict[tuple[str, bytes], float] = {}

    async def verify(self, stored: str | None, password: str) -> bool:
        if stored is None:
            return False
        key = (stored, hashlib.sha256(password.encode()).digest())
        now = time.monotonic()
        seen = self._matched.get(key)
        if seen is not None and now - seen < self._ttl:
            return True
        # argon2 (and bcrypt) hold the CPU for ~0.1 s: off the event loop.
        if not await asyncio.to_thread(self._check, stored, password):
            return False
        if len(self._matched) >= self._size:
            self._matched.clear()
        self._matched[key] = now
        return True
