"""Garbage collection's rows in the metadata store (the journal, delete leases, the record of
runs): one suite run on every backend (SQLite and PostgreSQL). The plan's queries and review
queues are checked against a full read in tests/test_gc_queues.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from wharf.meta.gc import GCRun

from .meta import EVENT, digest, manifest


async def test_a_delete_lease_lasts_until_its_holder_ends_it_or_it_expires(store):
    kept, short = digest("kept"), digest("short")
    assert await store.gc.delete_lease_left(kept) is None
    assert await store.gc.delete_lease_left() is None
    first = await store.gc.lease_deletes([kept], 1000)  # a deletion left by a killed process
    second = await store.gc.lease_deletes([kept], 30)  # the next run's, of the same bytes
    left = await store.gc.delete_lease_left(kept)
    assert left is not None and left > 900, "a shorter lease shortened a longer one"
    await store.gc.end_deletes(second)
    left = await store.gc.delete_lease_left(kept)
    assert left is not None and left > 900, "one deletion ended another's lease"
    await store.gc.end_deletes(first)
    assert await store.gc.delete_lease_left(kept) is None

    holder = await store.gc.lease_deletes([short], 0.5)
    await store.gc.renew_deletes(holder, 60)  # the deletion goes on
    left = await store.gc.delete_lease_left(short)
    assert left is not None and left > 50
    any_left = await store.gc.delete_lease_left()
    assert any_left is not None and any_left > 50
    await store.gc.renew_deletes(holder, 0.2)  # a renewal never shortens it
    left = await store.gc.delete_lease_left(short)
    assert left is not None and left > 50
    await store.gc.end_deletes(holder)

    await store.gc.lease_deletes([short], 0.2)
    deadline = asyncio.get_running_loop().time() + 30
    while await store.gc.delete_lease_left(short) is not None:  # expires by itself
        assert asyncio.get_running_loop().time() < deadline, "a 0.2 s lease still held after 30 s"
        await asyncio.sleep(0.05)


async def test_a_collected_row_goes_with_its_links_and_stays_journalled_until_forgotten(store):
    loose, named, fresh = digest("loose"), digest("named"), digest("fresh")
    for repository in ("a/one", "a/two"):
        await store.blobs.link(repository, loose, 3)
    await store.blobs.link("a/one", named, 5)
    await store.manifests.put("a/one", manifest("m", (named,)), None, EVENT)
    # Those rows were written before the cutoff; ``fresh`` is seen after it, and is spared.
    cutoff = datetime.now(UTC)
    await store.blobs.link("a/one", fresh, 7)
    assert await store.gc.delete_blobs([loose, named, fresh], cutoff) == [(loose, 3)]
    assert await store.blobs.present([loose, named, fresh]) == {named, fresh}
    assert await store.blobs.readable_size("a/two", loose) is None
    assert await store.blobs.links([loose]) == {}
    assert await store.gc.pending() == [(loose, 3)]
    assert await store.gc.delete_blobs([loose], cutoff) == []  # gone already: nothing twice
    await store.gc.forget_pending([loose])
    assert await store.gc.pending() == []


async def test_runs_are_recorded_closed_when_interrupted_and_added_up(store):
    started = datetime.now(UTC)
    done = GCRun(started, dry_run=False, delete_untagged=False, mode="offline", grace_seconds=0)
    done = await store.gc.save_run(done)
    done.status, done.ended_at, done.blobs_deleted, done.bytes_freed = "done", datetime.now(UTC), 2, 300
    assert (await store.gc.save_run(done)).id == done.id  # saved again: the same row
    dry = GCRun(started, dry_run=True, delete_untagged=True, mode="online", grace_seconds=60)
    running = await store.gc.save_run(dry)
    assert [run.id for run in await store.gc.runs()] == [running.id, done.id]  # newest first
    assert await store.gc.close_interrupted("the process stopped") == 1
    closed, kept = await store.gc.runs()
    assert (closed.status, closed.reason, closed.ended_at is not None) == (
        "failed",
        "the process stopped",
        True,
    )
    assert (kept.status, kept.blobs_deleted, kept.bytes_freed) == ("done", 2, 300)
    totals = {(t.status, t.dry_run): t for t in await store.gc.totals()}
    assert set(totals) == {("done", False), ("failed", True)}
    assert (totals["done", False].runs, totals["done", False].bytes_freed) == (1, 300)
    assert await store.gc.close_interrupted("again") == 0
