"""The blob rows of the metadata store (blobs, their links, uploads in progress): one suite
run on every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

from .meta import EVENT, digest, manifest


async def test_blob_is_readable_only_where_linked(store):
    await store.blobs.link("a/one", digest("x"), 10)
    assert await store.blobs.readable_size("a/one", digest("x")) == 10
    assert await store.blobs.readable_size("a/two", digest("x")) is None
    await store.blobs.link("a/two", digest("x"), 10)
    assert await store.blobs.unlink("a/one", digest("x"), EVENT)
    assert await store.blobs.readable_size("a/one", digest("x")) is None
    assert await store.blobs.readable_size("a/two", digest("x")) == 10
    assert not await store.blobs.unlink("a/one", digest("x"), EVENT)


async def test_a_blob_named_by_a_manifest_is_readable_without_its_link(store):
    """The one rule, asked by a GET, a HEAD, a mount and a manifest put: readable where
    linked or where a manifest of the repository names it; nowhere else."""
    layer = digest("layer")
    await store.blobs.link("a/one", layer, 7)
    await store.manifests.put("a/one", manifest("m", (layer,)), "v1", EVENT)
    assert await store.blobs.unlink("a/one", layer, EVENT)  # the link goes; the manifest names it
    assert await store.blobs.readable_size("a/one", layer) == 7
    assert await store.blobs.touch("a/one", layer) == 7
    assert await store.blobs.readable_size("a/two", layer) is None
    assert await store.blobs.touch("a/two", layer) is None
    assert await store.blobs.mount("a/two", "a/three", layer, EVENT) is None  # a/three reads nothing
    assert await store.blobs.mount("a/two", "a/one", layer, EVENT) == 7
    assert await store.blobs.readable_size("a/two", layer) == 7
    await store.manifests.put("a/one", manifest("n", (layer,)), "v2", EVENT)  # a put reads it too
    assert await store.manifests.delete("a/one", digest("m"), EVENT) == ["v1"]
    assert await store.manifests.delete("a/one", digest("n"), EVENT) == ["v2"]
    assert await store.blobs.readable_size("a/one", layer) is None  # nothing names it there now
    assert await store.blobs.links([layer]) == {layer: ("a/two",)}


async def test_blob_rows_as_collections_and_checks_read_them(store):
    first, second, absent = digest("first"), digest("second"), digest("absent")
    assert await store.blobs.count() == 0
    await store.blobs.link("a/one", first, 3)
    await store.blobs.link("a/two", first, 3)
    await store.blobs.link("a/two", second, 5)
    assert await store.blobs.count() == 2
    assert await store.blobs.present([first, absent]) == {first}
    assert await store.blobs.sizes([first, second, absent]) == {first: 3, second: 5}
    assert await store.blobs.links([first, second, absent]) == {first: ("a/one", "a/two"), second: ("a/two",)}


async def test_upload_offset_moves_only_from_the_expected_value(store):
    upload = await store.blobs.create_upload("u1", "a/one")
    assert upload.offset == 0
    assert await store.blobs.set_upload_offset("u1", 0, 100)
    assert not await store.blobs.set_upload_offset("u1", 0, 200)
    assert (await store.blobs.get_upload("u1")).offset == 100
    await store.blobs.link("a/one", digest("done"), 100, finished_upload="u1")
    assert await store.blobs.get_upload("u1") is None


async def test_idle_uploads_are_listed_and_purged_only_while_still_idle(store):
    from datetime import UTC, datetime, timedelta

    await store.blobs.create_upload("idle", "lib/a")
    await store.blobs.create_upload("written", "lib/a")
    # Both rows were written before the cutoff; anything written from now on is after it.
    cutoff = datetime.now(UTC)
    before_both = datetime.now(UTC) - timedelta(hours=1)
    assert [u.id for u in await store.blobs.idle_uploads(before_both)] == []
    idle = await store.blobs.idle_uploads(cutoff)
    assert {u.id for u in idle} == {"idle", "written"}
    assert all(u.repository == "lib/a" and u.offset == 0 for u in idle)
    assert not await store.blobs.purge_upload("idle", before_both)  # not idle that long
    assert await store.blobs.get_upload("idle") is not None

    # A request writes between the listing and the purge: the row stays.
    assert await store.blobs.set_upload_offset("written", 0, 10)
    assert not await store.blobs.purge_upload("written", cutoff)
    assert (await store.blobs.get_upload("written")).offset == 10
    assert await store.blobs.purge_upload("idle", cutoff)
    assert await store.blobs.get_upload("idle") is None
    assert not await store.blobs.purge_upload("idle", cutoff)  # once
