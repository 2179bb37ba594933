"""The metadata store protocol, one suite run on every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator

import pytest

from wharf.meta.sql import SQLMetadataStore
from wharf.meta.store import Event, MissingReference, NewManifest

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EVENT = Event("tester", "test")


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest(
    name: str, blobs: tuple[str, ...] = (), children: tuple[str, ...] = (), subject: str | None = None
):
    payload = f'{{"name":"{name}"}}'.encode()
    return NewManifest(
        digest=digest(name),
        media_type=INDEX if children else MANIFEST,
        payload=payload,
        config_digest=blobs[0] if blobs else None,
        subject_digest=subject,
        artifact_type="application/vnd.example" if subject else None,
        blobs=blobs,
        children=children,
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SQLMetadataStore]:
    instance = SQLMetadataStore(database_url)
    yield instance
    await instance.close()


async def test_blob_is_readable_only_where_linked(store):
    await store.link_blob("a/one", digest("x"), 10)
    assert await store.linked_blob_size("a/one", digest("x")) == 10
    assert await store.linked_blob_size("a/two", digest("x")) is None
    await store.link_blob("a/two", digest("x"), 10)
    assert await store.unlink_blob("a/one", digest("x"), EVENT)
    assert await store.linked_blob_size("a/one", digest("x")) is None
    assert await store.linked_blob_size("a/two", digest("x")) == 10
    assert not await store.unlink_blob("a/one", digest("x"), EVENT)


async def test_upload_offset_moves_only_from_the_expected_value(store):
    upload = await store.create_upload("u1", "a/one")
    assert upload.offset == 0
    assert await store.set_upload_offset("u1", 0, 100)
    assert not await store.set_upload_offset("u1", 0, 200)
    assert (await store.get_upload("u1")).offset == 100
    await store.link_blob("a/one", digest("done"), 100, finished_upload="u1")
    assert await store.get_upload("u1") is None


async def test_manifest_push_checks_every_reference(store):
    layer, config = digest("layer"), digest("config")
    await store.link_blob("a/one", config, 1)
    with pytest.raises(MissingReference) as missing:
        await store.put_manifest("a/one", manifest("m", (config, layer)), "v1", EVENT)
    assert missing.value.digest == layer
    assert await store.get_manifest("a/one", "v1") is None
    await store.link_blob("a/one", layer, 1)
    await store.put_manifest("a/one", manifest("m", (config, layer)), "v1", EVENT)
    got = await store.get_manifest("a/one", "v1")
    assert got is not None and got.digest == digest("m") and got.payload == b'{"name":"m"}'
    with pytest.raises(MissingReference) as child:
        await store.put_manifest(
            "a/one", manifest("i", children=(digest("m"), digest("absent"))), "multi", EVENT
        )
    assert child.value.kind == "manifest" and child.value.digest == digest("absent")


async def test_delete_by_digest_takes_its_tags_and_delete_tag_only_the_tag(store):
    await store.link_blob("a/one", digest("c"), 1)
    await store.put_manifest("a/one", manifest("m", (digest("c"),)), "v1", EVENT)
    await store.put_manifest("a/one", manifest("m", (digest("c"),)), "v2", EVENT)
    await store.put_manifest("a/one", manifest("n", (digest("c"),)), "v3", EVENT)
    assert await store.delete_tag("a/one", "v3", EVENT)
    assert await store.get_manifest("a/one", digest("n")) is not None
    assert await store.delete_manifest("a/one", digest("m"), EVENT) == ["v1", "v2"]
    assert await store.list_tags("a/one", None, None) == []
    assert await store.delete_manifest("a/one", digest("m"), EVENT) is None


async def test_tags_and_repositories_in_byte_order(store):
    await store.link_blob("b", digest("c"), 1)
    await store.put_manifest("b", manifest("m", (digest("c"),)), "a", EVENT)
    for tag in ["B", "b", "_x", "a1", "Z9", "v10", "v2"]:
        await store.put_manifest("b", manifest("m", (digest("c"),)), tag, EVENT)
    expected = sorted(["a", "B", "b", "_x", "a1", "Z9", "v10", "v2"])
    assert await store.list_tags("b", None, None) == expected
    assert await store.list_tags("b", 3, expected[2]) == expected[3:6]
    assert await store.list_tags("nothing", None, None) is None
    for name in ["z", "a/b", "a-b", "a"]:
        await store.link_blob(name, digest("c"), 1)
        await store.put_manifest(name, manifest("m", (digest("c"),)), None, EVENT)
    await store.link_blob("blobs/only", digest("c"), 1)  # holds no image: not listed
    assert await store.list_repositories(None, None) == sorted(["z", "a/b", "a-b", "a", "b"])
    await store.delete_manifest("z", digest("m"), EVENT)  # its last image: not listed either
    assert await store.list_repositories(None, None) == sorted(["a/b", "a-b", "a", "b"])


async def test_referrers_filter_by_artifact_type(store):
    await store.link_blob("a", digest("c"), 1)
    subject = digest("subject")
    await store.put_manifest("a", manifest("sig", (digest("c"),), subject=subject), None, EVENT)
    found = await store.referrers("a", subject, None)
    assert [r.digest for r in found] == [digest("sig")]
    assert await store.referrers("a", subject, "application/other") == []


async def test_concurrent_pushes_lose_no_tag_and_duplicate_no_row(store):
    """Many writers at once, as several replicas would be: every write lands exactly once."""
    config = digest("shared")
    await asyncio.gather(*(store.link_blob(f"r{i % 3}", config, 5) for i in range(12)))
    names = [f"m{i}" for i in range(10)]
    await asyncio.gather(*(store.put_manifest("r0", manifest(n, (config,)), n, EVENT) for n in names))
    await asyncio.gather(
        *(store.put_manifest("r0", manifest("same", (config,)), "same", EVENT) for _ in range(6))
    )
    assert await store.list_tags("r0", None, None) == sorted([*names, "same"])
    assert sorted(await store.list_repositories(None, None)) == ["r0"]  # r1 and r2 hold only blobs


async def test_events_record_who_did_what(store):
    await store.link_blob("a", digest("c"), 1, Event("alice", "blob.push", "a", digest("c"), digest("c")))
    await store.put_manifest(
        "a", manifest("m", (digest("c"),)), "v1", Event("bob", "manifest.push", "a", "v1")
    )
    await store.delete_tag("a", "v1", Event("carol", "tag.delete", "a", "v1"))
    events = await store.events()
    assert [(e["actor"], e["action"]) for e in events] == [
        ("carol", "tag.delete"),
        ("bob", "manifest.push"),
        ("alice", "blob.push"),
    ]
    assert events[0]["digest"] == digest("m")


async def test_postgresql_writers_that_deadlock_are_run_again(postgres_server):
    """Two transactions that lock rows in opposite orders: PostgreSQL kills one, the store
    runs it again, and both land."""
    import sqlalchemy as sa

    from wharf.meta import migrate

    from .postgres import create_database, drop_database

    url = create_database(postgres_server)
    try:
        migrate.upgrade(url)
        store = SQLMetadataStore(url)
        for name in ("first", "second"):
            await store.link_blob(name, digest(name), 1)
        runs: list[str] = []

        def crossing(a: str, b: str):
            def work(conn: sa.Connection) -> None:
                runs.append(a)
                update = sa.text("UPDATE repositories SET created_at = now() WHERE name = :name")
                conn.execute(update, {"name": a})
                conn.execute(sa.text("SELECT pg_sleep(0.3)"))
                conn.execute(update, {"name": b})

            return work

        await asyncio.gather(
            store._db.write(crossing("first", "second")), store._db.write(crossing("second", "first"))
        )
        assert len(runs) == 3  # one of the two ran twice
        await store.close()
    finally:
        drop_database(postgres_server, url)


async def test_tag_history_is_one_chain_under_concurrent_moves(database_url):
    """Replicas moving one tag at once: each move starts where the previous one ended."""
    import sqlalchemy as sa

    from wharf.meta.migrate import sync_url
    from wharf.meta.schema import tag_history

    stores = [SQLMetadataStore(database_url) for _ in range(3)]
    try:
        await stores[0].link_blob("a", digest("c"), 1)
        names = [f"m{i}" for i in range(24)]
        await asyncio.gather(
            *(
                stores[i % 3].put_manifest("a", manifest(n, (digest("c"),)), "latest", EVENT)
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


async def test_a_job_is_claimed_once_and_runs_its_course(store):
    from datetime import UTC, datetime, timedelta

    job = await store.jobs.create("registryGC", {"dryRun": True})
    assert job.status == "waiting"
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    claims = await asyncio.gather(*(store.jobs.claim(f"w{n}", ["registryGC"], long_ago) for n in range(4)))
    taken = [c for c in claims if c is not None]
    assert [c.id for c in taken] == [job.id]
    assert (taken[0].status, taken[0].attempts) == ("running", 1)
    assert await store.jobs.claim("w9", ["registryGC"], long_ago) is None
    worker = taken[0].worker
    assert await store.jobs.heartbeat(job.id, worker) is False
    assert await store.jobs.heartbeat(job.id, "someone else") is None
    await store.jobs.log(job.id, "first line")
    await store.jobs.log(job.id, "second line")
    assert [line for _at, line in await store.jobs.logs(job.id, 0, 10)] == ["first line", "second line"]
    assert (await store.jobs.request_stop(job.id)).stop_requested
    assert await store.jobs.heartbeat(job.id, worker) is True
    await store.jobs.finish(job.id, worker, "stopped", {"blobs": 1}, None)
    done = await store.jobs.get(job.id)
    assert (done.status, done.result, done.ended_at is not None) == ("stopped", {"blobs": 1}, True)
    assert [j.id for j in await store.jobs.find("registryGC", None, False, 0, 10)] == [job.id]
    assert await store.jobs.find("registryGC", None, True, 0, 10) == []


async def test_a_failed_job_is_retried_then_ends_in_errors_and_a_dead_worker_is_taken_over(store):
    from datetime import UTC, datetime, timedelta

    past = datetime.now(UTC) - timedelta(minutes=5)
    job = await store.jobs.create("purgeUploads", max_attempts=3)
    first = await store.jobs.claim("w1", ["purgeUploads"], past)
    assert await store.jobs.retry(job.id, "w1", "boom", datetime.now(UTC))
    second = await store.jobs.claim("w2", ["purgeUploads"], past)
    assert (first.attempts, second.attempts, second.worker) == (1, 2, "w2")
    # w2 dies: no heartbeat. Another worker takes the job over once it is stale.
    assert await store.jobs.claim("w3", ["purgeUploads"], past) is None
    third = await store.jobs.claim("w3", ["purgeUploads"], datetime.now(UTC) + timedelta(seconds=1))
    assert (third.id, third.attempts, third.worker) == (job.id, 3, "w3")
    assert not await store.jobs.retry(job.id, "w3", "boom again", datetime.now(UTC))
    ended = await store.jobs.get(job.id)
    assert (ended.status, ended.error) == ("errors", "boom again")


async def test_a_schedule_fires_once_across_replicas_and_settings_round_trip(store):
    from datetime import UTC, datetime

    due = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    fired = await asyncio.gather(*(store.jobs.fire_schedule("gc", due, "registryGC", {}) for _ in range(3)))
    assert len([job for job in fired if job is not None]) == 1
    assert await store.jobs.get_setting("gc") is None
    await store.jobs.put_setting("gc", {"schedule": "0 0 3 * * SAT"})
    await store.jobs.put_setting("gc", {"schedule": "0 3 * * *"})
    assert await store.jobs.get_setting("gc") == {"schedule": "0 3 * * *"}


async def test_idle_uploads_are_listed_and_purged_only_while_still_idle(store):
    from datetime import UTC, datetime, timedelta

    await store.create_upload("idle", "lib/a")
    await store.create_upload("written", "lib/a")
    # Both rows were written before the cutoff; anything written from now on is after it.
    cutoff = datetime.now(UTC)
    before_both = datetime.now(UTC) - timedelta(hours=1)
    assert [u.id for u in await store.idle_uploads(before_both)] == []
    idle = await store.idle_uploads(cutoff)
    assert {u.id for u in idle} == {"idle", "written"}
    assert all(u.repository == "lib/a" and u.offset == 0 for u in idle)
    assert not await store.purge_upload("idle", before_both)  # not idle that long
    assert await store.get_upload("idle") is not None

    # A request writes between the listing and the purge: the row stays.
    assert await store.set_upload_offset("written", 0, 10)
    assert not await store.purge_upload("written", cutoff)
    assert (await store.get_upload("written")).offset == 10
    assert await store.purge_upload("idle", cutoff)
    assert await store.get_upload("idle") is None
    assert not await store.purge_upload("idle", cutoff)  # once


async def test_a_manifest_naming_more_blobs_than_a_statement_takes_parameters(store):
    """PostgreSQL takes at most 32,767 parameters a statement; a 4 MiB manifest can name
    40,000 blobs or children. The references are checked in batches (issue 10 item 15; an
    index of 33,000 children is pushed over HTTP in test_crafted_input.py)."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from wharf.meta import schema

    now = datetime.now(UTC)
    layers = tuple(digest(f"layer{i}") for i in range(16_400))  # 2 x 16,400 > 32,767
    await store.link_blob("many/layers", layers[0], 1)

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
    await store.put_manifest("many/layers", image, "v1", EVENT)
    assert (await store.get_manifest("many/layers", "v1")).digest == image.digest


async def test_a_delete_lease_lasts_until_its_holder_ends_it_or_it_expires(store):
    kept, short = digest("kept"), digest("short")
    assert await store.delete_lease_left(kept) is None
    assert await store.delete_lease_left() is None
    first = await store.lease_deletes([kept], 1000)  # a deletion left by a killed process
    second = await store.lease_deletes([kept], 30)  # the next run's, of the same bytes
    left = await store.delete_lease_left(kept)
    assert left is not None and left > 900, "a shorter lease shortened a longer one"
    await store.end_deletes(second)
    left = await store.delete_lease_left(kept)
    assert left is not None and left > 900, "one deletion ended another's lease"
    await store.end_deletes(first)
    assert await store.delete_lease_left(kept) is None

    holder = await store.lease_deletes([short], 0.5)
    await store.renew_deletes(holder, 60)  # the deletion goes on
    left = await store.delete_lease_left(short)
    assert left is not None and left > 50
    any_left = await store.delete_lease_left()
    assert any_left is not None and any_left > 50
    await store.renew_deletes(holder, 0.2)  # a renewal never shortens it
    left = await store.delete_lease_left(short)
    assert left is not None and left > 50
    await store.end_deletes(holder)

    await store.lease_deletes([short], 0.2)
    deadline = asyncio.get_running_loop().time() + 30
    while await store.delete_lease_left(short) is not None:  # expires by itself
        assert asyncio.get_running_loop().time() < deadline, "a 0.2 s lease still held after 30 s"
        await asyncio.sleep(0.05)
