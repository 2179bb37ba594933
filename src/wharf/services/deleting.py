"""Deleting blobs' bytes: the one way every deleter (a collection, ``fsck --repair``) does it.

Inside the digests' section, rows already dealt with: a lease first, then a check that the
section's locks are still held, then the bytes, then the lease ends. A push of one of these
digests waits the lease out before it stores bytes (``services.uploads``), so a deletion that
outlives its section cannot take them: on PostgreSQL the section's locks go with their
connection, and a killed process's last S3 request may still be carried out after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence

from ..errors import UNAVAILABLE, RegistryError
from ..meta.gc import GCRows
from ..meta.store import MetadataStore
from ..storage.base import BlobStore

# How long a push waits for a deletion of its digest's bytes to end before it answers 503
# (a killed collection's lease on S3 lasts minutes); and how often it looks meanwhile.
WAIT_MAX = 10.0
WAIT_POLL = 0.1
# How often a deletion under way renews its lease.
RENEW_EVERY = 5.0
log = logging.getLogger(__name__)


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
    holder = await meta.gc.lease_deletes(digests, storage.delete_lease(len(digests)))
    if not await meta.digest_section_held():
        await _end(meta.gc, holder)  # nothing was sent
        raise GCLockLost("a digest section was lost with its database connection; the next run finishes")
    renewing = asyncio.create_task(_renew(meta.gc, holder, storage.delete_tail))
    try:
        # When this returns or raises (cancelled too), none of its requests can act any more.
        return await storage.delete_many(digests)
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        await _end(meta.gc, holder)  # a process killed before this leaves the lease to run out


async def _renew(rows: GCRows, holder: str, tail: float) -> None:
    """While the deletion runs: its lease lasts ``tail`` beyond the latest renewal, so one
    that outruns its first estimate (its requests queued behind others) stays covered,
    and one whose process dies lapses once its last request can no longer act."""
    while True:
        await asyncio.sleep(RENEW_EVERY)
        try:
            await rows.renew_deletes(holder, tail + RENEW_EVERY)
        except Exception as error:  # the first estimate still stands
            log.warning("could not renew a deletion's lease: %s", error)


async def _end(rows: GCRows, holder: str) -> None:
    try:
        await rows.end_deletes(holder)
    except Exception as error:  # the database unreachable: the lease runs out instead
        log.warning("could not end a deletion's lease (it runs out by itself): %s", error)


async def wait_out_deletes(rows: GCRows, digest: str) -> None:
    """Inside the digest's section, before storing its bytes: wait until no deletion of them
    can act any more. Only a deletion that outlived its section leaves a lease to meet here
    (one holding the section is waited for by the section itself), so this is one lookup.
    A live deleter ends its lease as soon as its deletion has; one left by a killed process
    may last minutes, so after a while the push is answered 503 with when to retry."""
    began = time.monotonic()
    while (left := await rows.delete_lease_left(digest)) is not None:
        if time.monotonic() - began >= WAIT_MAX:
            raise RegistryError(
                UNAVAILABLE,
                {"digest": digest, "retryAfter": math.ceil(left)},
                f"blob {digest} is being deleted by a garbage collection that stopped part way; "
                f"retry in {math.ceil(left)} s",
                headers={"Retry-After": str(math.ceil(left))},
            )
        await asyncio.sleep(min(left, WAIT_POLL))
