"""The activity log of the metadata store: one suite run on every backend (SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wharf.meta.events import Event

from .meta import digest, manifest


async def test_events_record_who_did_what(store):
    await store.blobs.link("a", digest("c"), 1, Event("alice", "blob.push", "a", digest("c"), digest("c")))
    await store.manifests.put(
        "a", manifest("m", (digest("c"),)), "v1", Event("bob", "manifest.push", "a", "v1")
    )
    await store.manifests.delete_tag("a", "v1", Event("carol", "tag.delete", "a", "v1"))
    events = await store.events.find()
    assert [(e["actor"], e["action"]) for e in events] == [
        ("carol", "tag.delete"),
        ("bob", "manifest.push"),
        ("alice", "blob.push"),
    ]
    assert events[0]["digest"] == digest("m")


async def test_the_log_is_filtered_and_paged_newest_first(store):
    before = datetime.now(UTC) - timedelta(seconds=1)
    await store.events.record(Event("alice", "gc.run", detail={"blobs": 2}))
    await store.events.record(Event("bob", "repository.delete", "lib/a"))
    await store.events.record(Event("alice", "repository.delete", "lib/b"))
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert [e["repository"] for e in await store.events.find(actor="alice")] == ["lib/b", None]
    assert [e["actor"] for e in await store.events.find(action="repository.delete")] == ["alice", "bob"]
    assert [e["actor"] for e in await store.events.find(repository="lib/a")] == ["bob"]
    assert [e["detail"] for e in await store.events.find(limit=1, start=2)] == [{"blobs": 2}]
    assert len(await store.events.find(since=before, until=after)) == 3
    assert await store.events.find(since=after) == []
    assert await store.events.find(until=before) == []
