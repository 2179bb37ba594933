"""Garbage collection's rows in the metadata store (the journal, delete leases, the record of
runs): one suite run on every backend (SQLite and PostgreSQL). The plan's queries and review
queues are checked against a full read in tests/test_gc_queues.py."""

from __future__ import annotations

import asyncio

from .meta import digest


async def test_a_delete_lease_lasts_until_ended_or_expired(store):
    kept, ended, short = digest("kept"), digest("ended"), digest("short")
    assert await store.gc.delete_lease_left(kept) is None
    await store.gc.lease_deletes([kept, ended], 30)
    left = await store.gc.delete_lease_left(kept)
    assert left is not None and 20 < left <= 30
    await store.gc.end_deletes([ended])
    assert await store.gc.delete_lease_left(ended) is None
    assert await store.gc.delete_lease_left(kept) is not None  # only the ones named end
    await store.gc.lease_deletes([kept], 1000)  # taken again: the later end counts
    left = await store.gc.delete_lease_left(kept)
    assert left is not None and left > 900
    await store.gc.lease_deletes([short], 0.2)
    deadline = asyncio.get_running_loop().time() + 30
    while await store.gc.delete_lease_left(short) is not None:  # expires by itself
        assert asyncio.get_running_loop().time() < deadline, "a 0.2 s lease still held after 30 s"
        await asyncio.sleep(0.05)
