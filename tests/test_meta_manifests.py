"""The manifest rows of the metadata store (repositories, manifests, tags): one suite run on
every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from wharf.meta.manifests import MissingReference
from wharf.meta.sql import SQLMetadataStore

from .meta import EVENT, digest, manifest


async def test_manifest_push_checks_every_reference(store):
    layer, config = digest("layer"), digest("config")
    await store.blobs.link("a/one", config, 1)
    with pytest.raises(MissingReference) as missing:
        await store.manifests.put("a/one", manifest("m", (config, layer)), "v1", EVENT)
    assert missing.value.digest == layer
    assert await store.manifests.get("a/one", "v1") is None
    await store.blobs.link("a/one", layer, 1)
    await store.manifests.put("a/one", manifest("m", (config, layer)), "v1", EVENT)
    got = await store.manifests.get("a/one", "v1")
    assert got is not None and got.digest == digest("m") and got.payload == b'{"name":"m"}'
    with pytest.raises(MissingReference) as child:
        await store.manifests.put(
            "a/one", manifest("i", children=(digest("m"), digest("absent"))), "multi", EVENT
        )
    assert child.value.kind == "manifest" and child.value.digest == digest("absent")


async def test_delete_by_digest_takes_its_tags_and_delete_tag_only_the_tag(store):
    await store.blobs.link("a/one", digest("c"), 1)
    await store.manifests.put("a/one", manifest("m", (digest("c"),)), "v1", EVENT)
    await store.manifests.put("a/one", manifest("m", (digest("c"),)), "v2", EVENT)
    await store.manifests.put("a/one", manifest("n", (digest("c"),)), "v3", EVENT)
    assert await store.manifests.delete_tag("a/one", "v3", EVENT)
    assert await store.manifests.get("a/one", digest("n")) is not None
    assert await store.manifests.delete("a/one", digest("m"), EVENT) == ["v1", "v2"]
    assert await store.manifests.list_tags("a/one", None, None) == []
    assert await store.manifests.delete("a/one", digest("m"), EVENT) is None


async def test_tags_and_repositories_in_byte_order(store):
    await store.blobs.link("b", digest("c"), 1)
    await store.manifests.put("b", manifest("m", (digest("c"),)), "a", EVENT)
    for tag in ["B", "b", "_x", "a1", "Z9", "v10", "v2"]:
        await store.manifests.put("b", manifest("m", (digest("c"),)), tag, EVENT)
    expected = sorted(["a", "B", "b", "_x", "a1", "Z9", "v10", "v2"])
    assert await store.manifests.list_tags("b", None, None) == expected
    assert await store.manifests.list_tags("b", 3, expected[2]) == expected[3:6]
    assert await store.manifests.list_tags("nothing", None, None) is None
    for name in ["z", "a/b", "a-b", "a"]:
        await store.blobs.link(name, digest("c"), 1)
        await store.manifests.put(name, manifest("m", (digest("c"),)), None, EVENT)
    await store.blobs.link("blobs/only", digest("c"), 1)  # holds no image: not listed
    assert await store.manifests.list_repositories(None, None) == sorted(["z", "a/b", "a-b", "a", "b"])
    await store.manifests.delete("z", digest("m"), EVENT)  # its last image: not listed either
    assert await store.manifests.list_repositories(None, None) == sorted(["a/b", "a-b", "a", "b"])


async def test_referrers_filter_by_artifact_type(store):
    await store.blobs.link("a", digest("c"), 1)
    subject = digest("subject")
    await store.manifests.put("a", manifest("sig", (digest("c"),), subject=subject), None, EVENT)
    found = await store.manifests.referrers("a", subject, None)
    assert [r.digest for r in found] == [digest("sig")]
    assert await store.manifests.referrers("a", subject, "application/other") == []


async def test_concurrent_pushes_lose_no_tag_and_duplicate_no_row(store):
    """Many writers at once, as several replicas would be: every write lands exactly once."""
    config = digest("shared")
    await asyncio.gather(*(store.blobs.link(f"r{i % 3}", config, 5) for i in range(12)))
    names = [f"m{i}" for i in range(10)]
    await asyncio.gather(*(store.manifests.put("r0", manifest(n, (config,)), n, EVENT) for n in names))
    await asyncio.gather(
        *(store.manifests.put("r0", manifest("same", (config,)), "same", EVENT) for _ in range(6))
    )
    assert await store.manifests.list_tags("r0", None, None) == sorted([*names, "same"])
    assert sorted(await store.manifests.list_repositories(None, None)) == ["r0"]  # r1 and r2 hold only blobs


async def test_tag_history_is_one_chain_under_concurrent_moves(database_url):
    """Replicas moving one tag at once: each move starts where the previous one ended."""
    import sqlalchemy as sa

    from wharf.meta.migrate import sync_url
    from wharf.meta.schema import tag_history

    stores = [SQLMetadataStore(database_url) for _ in range(3)]
    try:
        await stores[0].blobs.link("a", digest("c"), 1)
        names = [f"m{i}" for i in range(24)]
        await asyncio.gather(
            *(
                stores[i % 3].manifests.put("a", manifest(n, (digest("c"),)), "latest", EVENT)
                for i, n in enumerate(names)
            )
        )
    finally:
        for store in stores:
            await store.close()
    engine = sa.create_engine(sync_url(database_url))
    with engine.connect() as conn:
        moves = conn.execute(
            sa.select(tag_history.c.old_digest, tag_history.c.new_digest)
            .where(tag_history.c.name == "latest")
            .order_by(tag_history.c.id)
        ).all()
    engine.dispose()
    assert moves[0].old_digest is None
    for before, after in itertools.pairwise(moves):
        assert after.old_digest == before.new_digest


async def test_a_manifest_naming_more_blobs_than_a_statement_takes_parameters(store):
    """PostgreSQL takes at most 32,767 parameters a statement; a 4 MiB manifest can name
    40,000 blobs or children. The references are checked in batches (issue 10 item 15; an
    index of 33,000 children is pushed over HTTP in test_crafted_input.py)."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from wharf.meta import schema

    now = datetime.now(UTC)
    layers = tuple(digest(f"layer{i}") for i in range(16_400))  # 2 x 16,400 > 32,767
    await store.blobs.link("many/layers", layers[0], 1)

    def link_all(conn: sa.Connection) -> None:
        # The rows in two statements (import_repository takes about 1 ms a blob here).
        repository = conn.scalar(
            sa.select(schema.repositories.c.id).where(schema.repositories.c.name == "many/layers")
        )
        rows = [{"digest": d, "size": 1, "created_at": now, "last_seen_at": now} for d in layers[1:]]
        conn.execute(schema.blobs.insert(), rows)
        links = [{"repository_id": repository, "digest": d, "created_at": now} for d in layers[1:]]
        conn.execute(schema.repository_blobs.insert(), links)

    await store._db.write(link_all)
    image = manifest("many", blobs=layers)
    await store.manifests.put("many/layers", image, "v1", EVENT)
    assert (await store.manifests.get("many/layers", "v1")).digest == image.digest


async def test_tag_and_manifest_details_list_what_the_admin_api_shows(store):
    await store.blobs.link("a/one", digest("c"), 1)
    await store.manifests.put("a/one", manifest("m", (digest("c"),)), "v1", EVENT)
    await store.manifests.put("a/one", manifest("m", (digest("c"),)), "latest", EVENT)
    await store.manifests.put("a/one", manifest("n", (digest("c"),)), "v2", EVENT)
    await store.manifests.put("a/one", manifest("o", (digest("c"),)), None, EVENT)  # untagged
    tags = await store.manifests.tag_details("a/one", 0, 10)
    assert tags is not None
    assert [(t.name, t.digest) for t in tags] == [
        ("latest", digest("m")),
        ("v1", digest("m")),
        ("v2", digest("n")),
    ]
    assert tags[0].media_type == "application/vnd.oci.image.manifest.v1+json"
    assert tags[0].size == len(b'{"name":"m"}') and tags[0].updated_at.tzinfo is not None
    page = await store.manifests.tag_details("a/one", 1, 1)
    assert page is not None and [t.name for t in page] == ["v1"]
    manifests = await store.manifests.manifest_details("a/one", 0, 10)
    assert manifests is not None
    assert [(m.digest, m.tags) for m in manifests] == [
        (digest("m"), ("latest", "v1")),
        (digest("n"), ("v2",)),
        (digest("o"), ()),
    ]
    later = await store.manifests.manifest_details("a/one", 2, 5)
    assert later is not None and [m.digest for m in later] == [digest("o")]
    assert await store.manifests.tag_details("nothing", 0, 10) is None
    assert await store.manifests.manifest_details("nothing", 0, 10) is None
