"""Deleting blobs' bytes: the one way every deleter (a collection, ``fsck --repair``) does it.

Inside the digests' section, rows already dealt with: a lease first, then a check that the
section's locks are still held, then the bytes, then the lease ends. A push of one of these
digests waits the lease out before it stores bytes (``services.uploads``), so a deletion that
outlives its section cannot take them: on PostgreSQL the section's locks go with their
connection, and a killed process's last S3 request may still be carried out after it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from ..errors import UNAVAILABLE, RegistryError
from ..meta.gc import GCRows
from ..meta.store import MetadataStore
from ..storage.base import BlobStore

# How long a push waits for a deletion of its digest's bytes to end before it answers 503
# (a killed collection's lease on S3 lasts minutes); and how often it looks meanwhile.
WAIT_MAX = 10.0
WAIT_POLL = 0.1


class GCLockLost(Exception):
    """A lock went while a deleter held it (on PostgreSQL, with its database connection): the
    GC lock (another collection may have started) or a digest section's (a push of those
    digests may be storing them now). The deleter ends; the next run finishes its work."""


async def delete_bytes(meta: MetadataStore, storage: BlobStore, digests: Sequence[str]) -> set[str]:
    """Delete these blobs' bytes, inside their ``digest_section``; the digests NOT deleted.
    Raises GCLockLost, deleting nothing, when the section's locks have gone."""
    if not digests:
        return set()
    # The lease is committed before the check: a push that takes the section once its locks
    # have gone finds the lease, and one that took it before makes the check fail.
    await meta.gc.lease_deletes(digests, storage.delete_lease(len(digests)))
    try:
        if not await meta.digest_section_held():
            raise GCLockLost("a digest section was lost with its database connection; the next run finishes")
        return await storage.delete_many(digests)  # every request has ended when this returns or raises
    finally:
        await meta.gc.end_deletes(digests)


async def wait_out_deletes(rows: GCRows, digest: str) -> None:
    """Inside the digest's section, before storing its bytes: wait until no deletion of them
    can act any more. Only a deletion that outlived its section leaves a lease to meet here
    (one holding the section is waited for by the section itself), so this is one lookup.
    A live deleter ends its lease as soon as its deletion has; one left by a killed process
    may last minutes, so after a while the push is answered 503 with when to retry."""
    waited = 0.0
    while (left := await rows.delete_lease_left(digest)) is not None:
        if waited >= WAIT_MAX:
            raise RegistryError(
                UNAVAILABLE,
                {"digest": digest, "retryAfter": math.ceil(left)},
                f"blob {digest} is being deleted by a garbage collection that stopped part way; "
                f"retry in {math.ceil(left)} s",
                headers={"Retry-After": str(math.ceil(left))},
            )
        pause = min(left, WAIT_POLL)
        await asyncio.sleep(pause)
        waited += pause
