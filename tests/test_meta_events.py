"""The activity log of the metadata store: one suite run on every backend (SQLite and
PostgreSQL)."""

from __future__ import annotations

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
