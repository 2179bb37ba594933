"""Garbage collection's review queues decide exactly as a full read of every row.

Random histories of pushes (images, indexes, referrers, tags), tag moves and deletes,
image and repository deletes, and real collections, on SQLite and PostgreSQL; at each
checkpoint the plan read from the queues (the default) must equal the plan read from every
row (``scan_storage``), with and without --delete-untagged.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wharf.meta.sql import SQLMetadataStore
from wharf.services.gc import GarbageCollector, GCOptions, Plan
from wharf.storage.filesystem import FilesystemBlobStore

from .callers import ADMIN
from .meta import EVENT, digest, manifest

REPOSITORIES = ("lib/a", "lib/b", "team/c")


@pytest.fixture
async def collector(database_url: str, tmp_path: Path) -> AsyncIterator[GarbageCollector]:
    meta = SQLMetadataStore(database_url)
    storage = FilesystemBlobStore(tmp_path / "storage", fsync=False)
    yield GarbageCollector(meta, storage)
    await meta.close()


def summary(plan: Plan) -> tuple[set[tuple[str, str]], set[str]]:
    return {(m.repository, m.digest) for m in plan.manifests}, {digest for digest, _size in plan.blobs}


class History:
    """Random operations through the store, remembering what each repository holds."""

    def __init__(self, gc: GarbageCollector, rng: random.Random) -> None:
        self.gc, self.meta, self.rng = gc, gc.meta, rng
        self.manifests: dict[str, list[str]] = {repo: [] for repo in REPOSITORIES}
        self.tags: dict[str, set[str]] = {repo: set() for repo in REPOSITORIES}
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}-{self.count}-{self.rng.random()}"

    async def push(self, repo: str) -> None:
        rng, self.count = self.rng, self.count + 1
        tag = rng.choice([None, None, "latest", "v1", "v2", f"t{self.count}"])
        existing = self.manifests[repo]
        kind = rng.random()
        if kind < 0.2 and existing:  # an index of some of the repository's manifests
            children = tuple(rng.sample(existing, min(len(existing), rng.randint(1, 3))))
            new = manifest(self.name("index"), children=children)
        else:
            # Layers shared across the whole history, so deletes leave some still named.
            blobs = tuple(digest(f"layer-{rng.randint(0, 30)}") for _ in range(rng.randint(1, 3)))
            for blob in blobs:
                await self.meta.blobs.link(repo, blob, 10)
            subject = rng.choice(existing) if kind > 0.75 and existing else None
            new = manifest(self.name("image"), blobs=tuple(dict.fromkeys(blobs)), subject=subject)
        await self.meta.manifests.put(repo, new, tag, EVENT)
        if new.digest not in existing:
            existing.append(new.digest)
        if tag is not None:
            self.tags[repo].add(tag)

    async def step(self) -> None:
        rng = self.rng
        repo = rng.choice(REPOSITORIES)
        roll = rng.random()
        if roll < 0.55 or not self.manifests[repo]:
            await self.push(repo)
        elif roll < 0.65:  # an unreferenced upload
            await self.meta.blobs.link(repo, digest(self.name("loose")), 5)
        elif roll < 0.8 and self.tags[repo]:
            tag = rng.choice(sorted(self.tags[repo]))
            await self.meta.manifests.delete_tag(repo, tag, EVENT)
            self.tags[repo].discard(tag)
        elif roll < 0.95:
            gone = rng.choice(self.manifests[repo])
            await self.meta.manifests.delete(repo, gone, EVENT)
            self.manifests[repo].remove(gone)
        else:
            await self.meta.manifests.delete_repository(repo, EVENT)
            self.manifests[repo], self.tags[repo] = [], set()

    async def collect(self) -> None:
        untagged = self.rng.random() < 0.5
        await self.gc.run(ADMIN, GCOptions(grace=timedelta(0), delete_untagged=untagged, mode="online"))

    async def forget_collected(self) -> None:
        for repo in REPOSITORIES:
            still = set()
            for d in self.manifests[repo]:
                if await self.meta.manifests.get(repo, d) is not None:
                    still.add(d)
            self.manifests[repo] = [d for d in self.manifests[repo] if d in still]


@pytest.mark.parametrize("seed", range(4))
async def test_the_queues_plan_exactly_what_a_full_read_plans(collector, seed):
    history = History(collector, random.Random(seed))
    checkpoints = 0
    for number in range(1, 151):
        await history.step()
        if number % 10:
            continue
        for untagged in (False, True):
            options = GCOptions(dry_run=True, grace=timedelta(0), delete_untagged=untagged)
            queued = summary(await collector.plan(options))
            full = summary(await collector.plan(GCOptions(**{**options.__dict__, "scan_storage": True})))
            assert queued == full, f"seed {seed}, step {number}, delete_untagged={untagged}"
            checkpoints += bool(full[0] or full[1])
        # A real run settles queue entries: what happens next must queue them again.
        await history.collect()
        await history.forget_collected()
    assert checkpoints > 0  # the histories do leave garbage to find


async def test_a_collection_empties_the_queues_of_what_it_settled(collector):
    meta = collector.meta
    layer, loose = digest("layer"), digest("loose")
    await meta.blobs.link("lib/a", layer, 10)
    await meta.blobs.link("lib/a", loose, 5)
    kept = manifest("kept", blobs=(layer,))
    untagged = manifest("untagged", blobs=(layer,))
    await meta.manifests.put("lib/a", kept, "latest", EVENT)
    await meta.manifests.put("lib/a", untagged, None, EVENT)
    queued = await meta.gc.manifest_queue()
    assert len(queued) == 1  # the untagged one; tagging took the other off

    # A run without --delete-untagged keeps the untagged manifest queued (a later run with
    # it must still find it) and collects the loose blob.
    outcome = await collector.run(ADMIN, GCOptions(grace=timedelta(0)))
    assert {d for d, _size in outcome.deleted_blobs} == {loose}
    assert await meta.gc.manifest_queue() == queued

    # Untagging queues the manifest again; a run with --delete-untagged collects both.
    await meta.manifests.delete_tag("lib/a", "latest", EVENT)
    assert len(await meta.gc.manifest_queue()) == 2
    outcome = await collector.run(ADMIN, GCOptions(grace=timedelta(0), delete_untagged=True))
    assert {m.digest for m in outcome.deleted_manifests} == {kept.digest, untagged.digest}
    assert {d for d, _size in outcome.deleted_blobs} == {layer}
    assert await meta.gc.manifest_queue() == {}
    assert await meta.gc.blob_candidates(datetime.now(UTC), (), full=False) == ([], {})


async def plans_agree(collector: GarbageCollector, delete_untagged: bool) -> tuple[set[str], set[str]]:
    """The queue plan, checked against the full one: (manifest digests, blob digests)."""
    options = GCOptions(dry_run=True, grace=timedelta(0), delete_untagged=delete_untagged)
    queued = summary(await collector.plan(options))
    assert queued == summary(await collector.plan(GCOptions(**{**options.__dict__, "scan_storage": True})))
    return {d for _repo, d in queued[0]}, queued[1]


async def settle(collector: GarbageCollector) -> None:
    """A real run that finds nothing to delete, but takes settled entries off the queues."""
    outcome = await collector.run(ADMIN, GCOptions(grace=timedelta(0)))
    assert outcome.deleted_manifests == [] and outcome.deleted_blobs == []


async def image(meta: SQLMetadataStore, name: str, tag: str | None, subject: str | None = None) -> str:
    layer = digest(f"{name}-layer")
    await meta.blobs.link("lib/a", layer, 10)
    pushed = manifest(name, blobs=(layer,), subject=subject)
    await meta.manifests.put("lib/a", pushed, tag, EVENT)
    return pushed.digest


async def test_an_index_losing_its_tag_takes_its_settled_children_along(collector):
    meta = collector.meta
    child = await image(meta, "child", None)
    index = manifest("index", children=(child,))
    await meta.manifests.put("lib/a", index, "latest", EVENT)
    await settle(collector)
    assert await meta.gc.manifest_queue() == {}  # the child is kept for good, through the index

    await meta.manifests.delete_tag("lib/a", "latest", EVENT)
    manifests, blobs = await plans_agree(collector, delete_untagged=True)
    assert manifests == {index.digest, child} and blobs == {digest("child-layer")}


async def test_an_index_deleted_queues_what_it_listed(collector):
    meta = collector.meta
    child = await image(meta, "child", None)
    index = manifest("index", children=(child,))
    await meta.manifests.put("lib/a", index, "latest", EVENT)
    await settle(collector)

    await meta.manifests.delete("lib/a", index.digest, EVENT)
    assert len(await meta.gc.manifest_queue()) == 1
    manifests, _blobs = await plans_agree(collector, delete_untagged=True)
    assert manifests == {child}


async def test_a_subject_deleted_queues_its_referrers(collector):
    meta = collector.meta
    subject = await image(meta, "subject", "latest")
    referrer = await image(meta, "signature", None, subject=subject)
    await settle(collector)
    assert await meta.gc.manifest_queue() == {}  # the referrer is kept for good, through its subject

    await meta.manifests.delete("lib/a", subject, EVENT)
    manifests, blobs = await plans_agree(collector, delete_untagged=False)
    assert manifests == {referrer}
    assert blobs == {digest("subject-layer"), digest("signature-layer")}


async def test_a_moved_tag_queues_what_it_pointed_at(collector):
    meta = collector.meta
    old = await image(meta, "old", "latest")
    await settle(collector)
    assert await meta.gc.manifest_queue() == {}

    await image(meta, "new", "latest")
    manifests, blobs = await plans_agree(collector, delete_untagged=True)
    assert manifests == {old} and blobs == {digest("old-layer")}
