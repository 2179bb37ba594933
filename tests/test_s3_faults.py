"""S3 faults, injected by a proxy on loopback in front of SeaweedFS (wharf/testing/s3proxy.py):
deletes that fail for some keys or whole, or time out, are not counted as freed, stay in the
GC journal and are retried by the next run; a listing streams page by page. The services run
in this process over PostgreSQL and an S3 store that talks to the proxy. Also the filesystem
analogue of a blob that cannot be deleted (SQLite + filesystem)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from wharf.config import Settings
from wharf.meta import migrate
from wharf.services.gc import GCOptions, Outcome
from wharf.services.registry import Registry
from wharf.storage.s3 import S3BlobStore
from wharf.testing.s3proxy import S3FaultProxy
from wharf.testing.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3
from wharf.wiring import build_registry

from .callers import ADMIN, ANYONE
from .oci import OCI_MANIFEST, Image, sha256
from .postgres import create_database, drop_database

pytestmark = pytest.mark.slow
NOW = GCOptions(grace=timedelta(0))


@pytest.fixture
def proxy(s3_server: SeaweedS3) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(s3_server.endpoint, ACCESS_KEY, SECRET_KEY) as instance:
        yield instance


def s3_store(config: dict[str, Any], endpoint: str, **kwargs: Any) -> S3BlobStore:
    return S3BlobStore(
        config["bucket"],
        endpoint=endpoint,
        access_key=config["accesskey"],
        secret_key=config["secretkey"],
        root=config["rootdirectory"],
        path_style=True,
        **kwargs,
    )


@pytest.fixture
async def registry(
    s3_server: SeaweedS3, proxy: S3FaultProxy, postgres_server: str
) -> AsyncIterator[Registry]:
    """The services over PostgreSQL and a bucket prefix reached through the proxy;
    ``registry.bucket`` reaches the same prefix directly (what is really stored)."""
    url = create_database(postgres_server)
    migrate.upgrade(url)
    config = s3_server.storage_config(f"faults/{uuid.uuid4().hex}")
    settings = Settings.model_validate(
        {
            "database": {"url": url},
            "storage": {
                "s3": {**config, "regionendpoint": proxy.endpoint},
                "redirect": {"disable": True},
                "fsync": False,
            },
        }
    )
    instance = build_registry(settings)
    instance.bucket = s3_store(config, s3_server.endpoint)  # type: ignore[attr-defined]
    instance.s3_config = config  # type: ignore[attr-defined]
    try:
        yield instance
    finally:
        await instance.close()
        drop_database(postgres_server, url)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def pushed_and_deleted(registry: Registry, repository: str, layers: int) -> Image:
    """An image pushed, then deleted by digest: its blobs are garbage (grace 0)."""
    image = Image.random(layers=layers, size=2048)
    for blob in [image.config, *image.layers]:
        await registry.uploads.monolithic(ANYONE, repository, sha256(blob), chunks(blob))
    put = await registry.manifests.put(ANYONE, repository, "v1", image.manifest, OCI_MANIFEST)
    await registry.manifests.delete(ANYONE, repository, put.digest)
    return image


def bucket(registry: Registry) -> S3BlobStore:
    store: S3BlobStore = registry.bucket  # type: ignore[attr-defined]
    return store


async def in_bucket(registry: Registry, digests: list[str]) -> set[str]:
    return {d for d in digests if await bucket(registry).stat(d) is not None}


async def journalled(registry: Registry) -> list[str]:
    """The digests in gc_pending: rows gone, bytes maybe not."""
    return [digest for digest, _size in await registry.meta.gc.pending()]


def freed(outcome: Outcome) -> tuple[int, int, set[str]]:
    run = outcome.run
    return run.blobs_deleted, run.bytes_freed, {d for d, _size in outcome.deleted_blobs}


async def test_keys_a_delete_fails_stay_journalled_uncounted_and_are_retried(
    registry: Registry, proxy: S3FaultProxy
):
    """DeleteObjects answers 200 and names the keys it could not delete: those blobs' bytes are
    still in the bucket, so they must stay in gc_pending, not count as freed, and go next run
    (whose own failures stay journalled in turn)."""
    image = await pushed_and_deleted(registry, "lib/faults", layers=3)
    blobs = [image.config, *image.layers]
    digests = [sha256(b) for b in blobs]
    failing, fine = digests[:2], digests[2:]
    rule = proxy.fail_deletes("|".join(d.split(":")[1] for d in failing))

    outcome = await registry.gc.run(ADMIN, NOW)
    assert rule.hits == 2
    assert await in_bucket(registry, digests) == set(failing)
    assert set(await journalled(registry)) == set(failing)
    assert freed(outcome) == (2, sum(len(b) for b in blobs[2:]), set(fine))
    assert await registry.meta.blobs.present(digests) == set()  # rows first: a leak, never a lie

    # The next run retries them from the journal; one fails again and stays there.
    rule.remove()
    again = proxy.fail_deletes(failing[0].split(":")[1])
    outcome = await registry.gc.run(ADMIN, NOW)
    assert again.hits == 1
    assert outcome.run.blobs_deleted == 1
    assert await in_bucket(registry, digests) == {failing[0]}
    assert await journalled(registry) == [failing[0]]

    again.remove()
    outcome = await registry.gc.run(ADMIN, NOW)
    assert outcome.run.blobs_deleted == 1
    assert await in_bucket(registry, digests) == set()
    assert await journalled(registry) == []


@pytest.mark.parametrize("fault", ["500", "timeout"])
async def test_a_delete_request_that_fails_whole_frees_nothing_and_is_retried(
    registry: Registry, proxy: S3FaultProxy, fault: str
):
    """DeleteObjects answered 500 (after botocore's retries) or never answered: nothing of the
    batch counts as freed, all of it stays journalled, and the next run deletes it."""
    image = await pushed_and_deleted(registry, "lib/down", layers=2)
    digests = [sha256(b) for b in [image.config, *image.layers]]
    if fault == "500":
        rule = proxy.answer(500, operation="DeleteObjects")
    else:
        rule = proxy.stall(operation="DeleteObjects")
    # A short timeout, and so a short wait for an unanswered request to be past arriving.
    config: dict[str, Any] = registry.s3_config  # type: ignore[attr-defined]
    registry.gc.storage = s3_store(config, proxy.endpoint, timeout=1)

    outcome = await registry.gc.run(ADMIN, NOW)
    assert rule.hits >= 1
    assert outcome.run.status == "done"
    assert freed(outcome) == (0, 0, set())
    assert await in_bucket(registry, digests) == set(digests)
    assert set(await journalled(registry)) == set(digests)

    rule.remove()
    outcome = await registry.gc.run(ADMIN, NOW)
    assert outcome.run.blobs_deleted == len(digests)
    # Freed now, and counted now: the journal kept each blob's size.
    assert outcome.run.bytes_freed == sum(len(b) for b in [image.config, *image.layers])
    assert await in_bucket(registry, digests) == set()
    assert await journalled(registry) == []


async def test_a_file_no_row_knows_whose_delete_fails_is_not_counted(registry: Registry, proxy: S3FaultProxy):
    """A storage scan's orphan whose key fails is not freed; the next scan finds it again."""
    data = os.urandom(3000)
    digest = sha256(data)

    async def accept(_size: int, publish: Any) -> None:
        await publish()

    await bucket(registry).store_blob(digest, chunks(data), lambda _chunk: None, accept)
    rule = proxy.fail_deletes(digest.split(":")[1])
    scan = GCOptions(grace=timedelta(0), scan_storage=True)
    outcome = await registry.gc.run(ADMIN, scan)
    assert rule.hits == 1
    assert (outcome.run.blobs_deleted, outcome.run.bytes_freed, outcome.deleted_files) == (0, 0, [])
    assert await in_bucket(registry, [digest]) == {digest}

    rule.remove()
    outcome = await registry.gc.run(ADMIN, scan)
    assert (outcome.run.blobs_deleted, outcome.run.bytes_freed) == (1, len(data))
    assert await in_bucket(registry, [digest]) == set()


async def test_a_cancelled_delete_ends_only_after_its_request(registry: Registry, proxy: S3FaultProxy):
    """delete_many's caller ends its critical section as soon as it returns or raises: a
    cancelled one must not raise while its DeleteObjects is still on its way, or the bytes
    could go after a push of the digest has stored them again."""
    data = os.urandom(1000)
    digest = sha256(data)
    await registry.uploads.monolithic(ANYONE, "lib/cancel", digest, chunks(data))
    rule = proxy.stall(operation="DeleteObjects", seconds=1.5, forward=True)  # slow, carried out

    deleting = asyncio.create_task(registry.storage.delete_many([digest]))
    while rule.hits == 0:  # the request has reached the proxy
        await asyncio.sleep(0.01)
    deleting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await deleting
    assert await in_bucket(registry, [digest]) == set(), "delete_many ended before its request"


async def test_a_delete_cancelled_while_unanswered_ends_only_once_its_request_cannot_arrive(
    registry: Registry, proxy: S3FaultProxy
):
    """Cancelled while DeleteObjects goes unanswered (the client times out and retries; the
    store carries each attempt out late): delete_many raises only once none of them can
    still arrive, as when it returns, so its caller's section and lease may end then."""
    data = os.urandom(1000)
    digest = sha256(data)
    await registry.uploads.monolithic(ANYONE, "lib/cancel-late", digest, chunks(data))
    config: dict[str, Any] = registry.s3_config  # type: ignore[attr-defined]
    store = s3_store(config, proxy.endpoint, timeout=1)  # settles in 4 s
    rule = proxy.stall(operation="DeleteObjects", seconds=2.5, forward=True)  # carried out late

    deleting = asyncio.create_task(store.delete_many([digest]))
    while rule.hits == 0:  # the request has reached the proxy
        await asyncio.sleep(0.01)
    deleting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await deleting
    assert await in_bucket(registry, [digest]) == set(), "delete_many ended before its late request"


async def test_listing_streams_page_by_page(registry: Registry, proxy: S3FaultProxy):
    """The first digests come after one listing request, not after the whole bucket's."""
    config: dict[str, Any] = registry.s3_config  # type: ignore[attr-defined]
    store = s3_store(config, proxy.endpoint, list_page_size=2)
    digests = set()
    for n in range(5):
        data = f"blob {n}".encode()
        await registry.uploads.monolithic(ANYONE, "lib/list", sha256(data), chunks(data))
        digests.add(sha256(data))
    before = proxy.count("ListObjectsV2")
    listing = store.list()
    first = await anext(listing)
    assert proxy.count("ListObjectsV2") - before == 1
    assert {first} | {d async for d in listing} == digests
    assert proxy.count("ListObjectsV2") - before == 3


@pytest.fixture
async def fs_registry(tmp_path: Path) -> AsyncIterator[Registry]:
    settings = Settings.model_validate(
        {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}, "fsync": False}}
    )
    migrate.upgrade(settings.database_url)
    instance = build_registry(settings)
    instance.root = tmp_path / "data"  # type: ignore[attr-defined]
    try:
        yield instance
    finally:
        await instance.close()


async def test_a_blob_file_that_cannot_be_deleted_stays_journalled(fs_registry: Registry):
    """Filesystem: a blob whose `data` cannot be unlinked (here a directory holding a file)
    fails alone; the others of the batch go, it is not counted and it stays journalled."""
    registry = fs_registry
    image = await pushed_and_deleted(registry, "lib/stuck", layers=2)
    blobs = [image.config, *image.layers]
    digests = [sha256(b) for b in blobs]
    stuck = digests[0]
    hex_ = stuck.split(":")[1]
    data = registry.root / f"docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"  # type: ignore[attr-defined]
    data.unlink()
    data.mkdir()
    (data / "in-the-way").write_bytes(b"x")

    outcome = await registry.gc.run(ADMIN, NOW)
    assert freed(outcome) == (2, sum(len(b) for b in blobs[1:]), set(digests[1:]))
    assert await journalled(registry) == [stuck]
    assert [await registry.storage.stat(d) is not None for d in digests[1:]] == [False, False]

    (data / "in-the-way").unlink()
    data.rmdir()
    data.write_bytes(image.config)
    outcome = await registry.gc.run(ADMIN, NOW)
    assert outcome.run.blobs_deleted == 1
    assert await journalled(registry) == []
    assert await registry.storage.stat(stuck) is None


async def test_the_proxy_fails_and_stalls_chosen_requests_and_passes_the_rest(
    registry: Registry, proxy: S3FaultProxy
):
    """The proxy itself, for the fault tests to come: a big multipart PUT and ranged GETs go
    through untouched; a rule acts on its operation and key only, as many times as told."""
    data = os.urandom(6 << 20)
    digest = sha256(data)
    await registry.uploads.monolithic(ANYONE, "lib/proxy", digest, chunks(data))
    assert proxy.count("UploadPart", digest.split(":")[1]) == 1
    assert await bucket(registry).stat(digest) == len(data)

    once = proxy.answer(503, operation="HeadObject", key=digest.split(":")[1], times=1)
    assert await registry.storage.stat(digest) == len(data)  # botocore retried past it
    assert (once.hits, proxy.count("HeadObject")) == (1, 2)

    always = proxy.answer(500, method="GET", key=r"/data$")
    with pytest.raises(Exception, match="InternalError"):
        await registry.storage.open(digest)
    always.remove()

    slow = proxy.stall(operation="GetObject", seconds=0.5, forward=True)
    stream = await registry.storage.open(digest, 10, 20)
    assert stream is not None
    assert b"".join([chunk async for chunk in stream]) == data[10:20]
    assert slow.hits == 1


async def test_a_delete_retried_after_a_timeout_holds_its_section_until_the_first_cannot_arrive(
    registry: Registry, proxy: S3FaultProxy
):
    """The first DeleteObjects times out on the client but reaches the store late (the proxy
    passes it on after 2 s); botocore's retry succeeds at once. Were the section to end with
    the retry, a push of the digest in between would store its bytes under a new row, and the
    late request delete them: a row without bytes. The store waits out such a request first."""
    image = await pushed_and_deleted(registry, "lib/late", layers=1)
    digests = [sha256(b) for b in [image.config, *image.layers]]
    config: dict[str, Any] = registry.s3_config  # type: ignore[attr-defined]
    registry.gc.storage = s3_store(config, proxy.endpoint, timeout=1)
    late = proxy.stall(operation="DeleteObjects", seconds=2, forward=True, times=1)

    outcome = await registry.gc.run(ADMIN, NOW)
    assert late.hits == 1
    assert {d for d, _size in outcome.deleted_blobs} == set(digests)
    for blob in [image.config, *image.layers]:  # pushed again once the collection has ended
        await registry.uploads.monolithic(ANYONE, "lib/late", sha256(blob), chunks(blob))
    deadline = asyncio.get_running_loop().time() + 30
    while proxy.count("DeleteObjects") < 2:  # the late request has been carried out
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    for digest in digests:
        assert await registry.meta.blobs.readable_size("lib/late", digest) is not None
        assert await bucket(registry).stat(digest) is not None, f"{digest}: a row without its bytes"
