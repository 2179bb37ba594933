"""HTTP Basic against an htpasswd file of bcrypt hashes (``auth.htpasswd``, as Distribution's):
every user the file knows may do everything.

The file is read as Distribution reads it (``registry/auth/htpasswd``): one ``user:hash`` a
line, blank lines and lines starting with ``#`` skipped, surrounding spaces trimmed. Only
bcrypt hashes (``htpasswd -B``: ``$2y$``, ``$2a$``, ``$2b$``) are accepted; a line with
another hash is refused at start-up, naming its line, where Distribution would start and
never let that user in. Unlike Distribution, a missing file is refused too: Wharf creates
no file and no password of its own.

The file is read again when it changes (its modification time, size or inode), so users
are added and removed without a restart; a change that breaks it is logged and the
previous contents kept."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from .caller import UNRESTRICTED, Caller
from .passwords import Verifier

log = logging.getLogger(__name__)

KEY = "auth.htpasswd.path"
BCRYPT_PREFIXES = ("$2y$", "$2a$", "$2b$")
# $2y$, the cost in two digits, then 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# bcrypt reads the first 72 bytes of a password; Apache's htpasswd hashed no more than that.
BCRYPT_MAX = 72
# Compared with when the user is unknown, so that an unknown name costs a known one's time
# (a bcrypt hash of cost 10, htpasswd's default, of a random string).
_DUMMY = "$2b$10$ZLlq6s3TFvjEBI203MbwLOSZJXVMtZPIvaJaClUusMCHhaF75uNsm"


class HtpasswdError(Exception):
    """The file cannot be used; the message is one line naming the key, the path and the line."""


def check_bcrypt(stored: str, password: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode()[:BCRYPT_MAX], stored.encode())
    except ValueError:  # not a bcrypt hash after all
        return False


def parse(text: str, path: Path) -> dict[str, str]:
    """User name to bcrypt hash; ``HtpasswdError`` naming the first line that is not one."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, stored = line.partition(":")
        where = f"{KEY}: {path}, line {number}"
        if not colon or not user:
            raise HtpasswdError(f"{where}: not user:hash")
        if not stored.startswith(BCRYPT_PREFIXES):
            # The hash itself is never shown: it is a secret too.
            raise HtpasswdError(
                f"{where}: {user!r} has no bcrypt hash (only bcrypt is accepted: make it with htpasswd -B)"
            )
        if not _BCRYPT.fullmatch(stored):
            raise HtpasswdError(f"{where}: {user!r} has a malformed bcrypt hash")
        entries[user] = stored
    return entries


@dataclass(frozen=True)
class _Version:
    mtime_ns: int
    size: int
    inode: int


def _version(stat: os.stat_result) -> _Version:
    return _Version(stat.st_mtime_ns, stat.st_size, stat.st_ino)


class HtpasswdBasic:
    """A ``BasicVerifier`` (services/authn.py) over one htpasswd file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()
        self._entries: dict[str, str] = {}
        self._version: _Version | None = None
        # Whether the file was found broken, and at which version: logged once for each.
        self._broken: tuple[bool, _Version | None] = (False, None)
        self._verifier = Verifier(check=check_bcrypt)

    def load(self) -> int:
        """Read the file now; the number of users. ``HtpasswdError`` when it cannot be used."""
        try:
            stat = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise HtpasswdError(
                f"{KEY}: {self.path} does not exist (Wharf creates none: make it with "
                f"htpasswd -cB {self.path} USER)"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
            raise HtpasswdError(f"{KEY}: cannot read {self.path}: {reason}") from None
        self._entries = parse(text, self.path)
        self._version = _version(stat)
        return len(self._entries)

    def _refresh(self) -> None:
        """Read the file again if it changed since it was read; keep what was read if the
        new contents cannot be used (and say so once for each broken version)."""
        try:
            current: _Version | None = _version(self.path.stat())
        except OSError:
            current = None  # gone: the users read before stay until it is back
        if current is not None and current == self._version:
            return
        if self._broken == (True, current):
            return
        before = self._version
        try:
            count = self.load()
        except HtpasswdError as error:
            log.warning("%s; keeping the %d user(s) read before", error, len(self._entries))
            self._broken = (True, current)
            return
        self._broken = (False, None)
        if before is not None:
            log.info("%s: read %s again: %d user(s)", KEY, self.path, count)

    async def verify(self, user: str, password: str) -> Caller | None:
        self._refresh()
        stored = self._entries.get(user)
        if stored is None:
            await self._verifier.verify(_DUMMY, password)
            return None
        if not await self._verifier.verify(stored, password):
            return None
        return Caller(user, UNRESTRICTED)
