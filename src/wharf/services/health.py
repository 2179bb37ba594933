"""Whether this process can serve: the database and the blob storage answer, and the
directories writes go through have room."""

from __future__ import annotations

from ..meta.store import MetadataStore
from ..storage.base import BlobStore, room_problems

# A digest no blob has: asking storage for it checks that storage answers.
PROBE = "sha256:" + "0" * 64


class Health:
    """Asked by /readyz, which names no repository and is open to every probe: no caller."""

    def __init__(self, meta: MetadataStore, storage: BlobStore) -> None:
        self.meta = meta
        self.storage = storage

    async def problems(self) -> list[str]:
        """What keeps this process from serving, each naming the part; empty when ready."""
        problems = []
        try:
            await self.meta.ping()
        except Exception as error:
            problems.append(f"database: {type(error).__name__}: {error}")
        try:
            await self.storage.stat(PROBE)
        except Exception as error:
            problems.append(f"storage: {type(error).__name__}: {error}")
        # A full disk, or a spool directory gone: every push would fail (507, or worse).
        problems += [f"storage: {problem}" for problem in room_problems(self.storage.local_directories())]
        return problems
