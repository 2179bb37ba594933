"""The metadata store: one attribute per domain, each its own protocol (``blobs``,
``manifests``, ``gc``, ``events``, ``jobs``, ``accounts``), and
the coordination that spans domains (digest sections, the GC lock) on the store itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from .accounts import AccountStore
    from .blobs import BlobRows
    from .engines import HeldLock
    from .events import EventLog
    from .gc import GCRows
    from .jobs import JobStore
    from .manifests import ManifestRows

T = TypeVar("T")


class MetadataStore(Protocol):
    @property
    def blobs(self) -> BlobRows:
        """Blobs, their links to repositories, uploads in progress."""

    @property
    def manifests(self) -> ManifestRows:
        """Repositories, manifests and tags."""

    @property
    def gc(self) -> GCRows:
        """Garbage collection's plan, sweep, journal and record of runs."""

    @property
    def events(self) -> EventLog:
        """The activity log."""

    @property
    def jobs(self) -> JobStore:
        """Jobs, schedules' firings and settings."""

    @property
    def accounts(self) -> AccountStore:
        """Users, organizations, teams, access to repositories, personal access tokens."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise unless the database answers (and its schema is there)."""

    async def digest_section(self, digests: Collection[str], body: Callable[[], Awaitable[T]]) -> T:
        """Run ``body`` inside one critical section per digest, across processes and replicas:
        storing a blob's bytes and recording its row happen inside it, and so do deleting
        the row and then the bytes, so neither can interleave with the other (GC invariant
        3). The body runs as a task of its own and the locks outlive it, whatever cancels
        the caller (see ``engines.run_in_section``): the one way into a section."""

    async def digest_section_held(self) -> bool:
        """Inside a ``digest_section`` body: whether its locks are still held (on PostgreSQL
        they go with their database connection). A deleter asks before deleting bytes."""

    def gc_lock(self) -> AbstractAsyncContextManager[HeldLock]:
        """Held for a whole garbage collection; yields a false handle when another one runs
        (invariant 6). Its ``lost()`` says whether the lock has gone since (on PostgreSQL,
        with its database connection): the collection asks before every batch."""
