"""Memory stays bounded under concurrency: /api/v0 bodies are capped, and the S3 store's
part buffers share one budget across all uploads. The heavy measurement (200 concurrent
64 MiB pushes, the server's peak RSS) is bench/memory.py, not part of the suite."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from wharf.api.limits import MAX_BODY
from wharf.storage.budget import ByteBudget
from wharf.storage.s3 import S3BlobStore
from wharf.storage.s3parts import STREAM_PART

from .server import WharfServer

SETTINGS = "/api/v0/admin/settings/registry/garbageCollection"
MiB = 1 << 20
BUDGET = 3 * STREAM_PART  # for the S3 store of these tests


def padded(document: dict[str, Any], size: int) -> bytes:
    """A valid JSON document of exactly ``size`` bytes: whitespace after it is still JSON."""
    text = json.dumps(document).encode()
    return text + b" " * (size - len(text))


def assert_too_large(response: Any) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/json")
    (error,) = response.json()["errors"]
    assert error["code"] == "SIZE_INVALID"
    assert str(MAX_BODY) in error["message"]


def test_an_api_body_over_the_cap_is_refused_and_nothing_is_saved(own_server: WharfServer) -> None:
    document = {"schedule": "0 3 * * *", "mode": "online"}
    with own_server.client() as client:
        before = client.get(SETTINGS).json()
        assert before["schedule"] == ""
        # Declared by its Content-Length: refused before it is read.
        response = client.put(
            SETTINGS, content=padded(document, MAX_BODY + 1), headers={"Content-Type": "application/json"}
        )
        assert_too_large(response)

        # Chunked, no length declared: refused once what arrived passes the cap.
        def chunks() -> Iterator[bytes]:
            body = padded(document, 3 * MAX_BODY)
            for start in range(0, len(body), 64 << 10):
                yield body[start : start + (64 << 10)]

        response = client.put(SETTINGS, content=chunks(), headers={"Content-Type": "application/json"})
        assert_too_large(response)
        assert client.get(SETTINGS).json() == before
        # The same document at the cap is taken: it was its size that was refused.
        response = client.put(
            SETTINGS, content=padded(document, MAX_BODY), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text
        assert client.get(SETTINGS).json()["schedule"] == "0 3 * * *"


@pytest.fixture
def s3_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[S3BlobStore]:
    s3 = request.getfixturevalue("s3_server")
    config = s3.storage_config(f"tests/{uuid.uuid4().hex}")
    yield S3BlobStore(
        config["bucket"],
        endpoint=config["regionendpoint"],
        access_key=config["accesskey"],
        secret_key=config["secretkey"],
        root=config["rootdirectory"],
        path_style=True,
        spool_directory=str(tmp_path),
        budget=ByteBudget(BUDGET),
    )


async def test_concurrent_streamed_blobs_hold_no_more_than_the_budget(s3_store: S3BlobStore) -> None:
    """Eight 20 MiB blobs streamed at once, with a budget of three parts: the store's counter
    never passes the budget, and Python's own allocations (tracemalloc: the part buffers
    and any copy of them) stay within it too. Without a shared budget each upload held a
    part filling plus three in flight: about 8 x 20 MiB here."""
    budget = s3_store.budget
    blobs = 8
    size = 2 * STREAM_PART + STREAM_PART // 2
    # The bodies are slices of one buffer allocated before tracing: only what the store
    # allocates is traced. Each blob starts with its own 8 bytes, so all digests differ.
    shared = os.urandom(size)
    heads = [index.to_bytes(8, "big") for index in range(blobs)]
    digests = [f"sha256:{hashlib.sha256(head + shared[8:]).hexdigest()}" for head in heads]
    piece = 256 << 10

    async def chunks(head: bytes) -> AsyncIterator[bytes]:
        yield head
        view = memoryview(shared)
        for start in range(8, size, piece):
            yield bytes(view[start : start + piece])  # one chunk at a time, as a server hands them
            await asyncio.sleep(0)

    async def push(index: int) -> int | None:
        hasher = hashlib.sha256()

        async def accept(_size: int, publish: Any) -> None:
            assert f"sha256:{hasher.hexdigest()}" == digests[index]
            await publish()

        return await s3_store.store_blob(digests[index], chunks(heads[index]), hasher.update, accept)

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        sizes = await asyncio.gather(*(push(index) for index in range(blobs)))
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert sizes == [size] * blobs
    # The budget, plus what is not part buffers: chunks on their way, botocore's requests.
    assert peak < BUDGET + 16 * MiB, f"{peak / MiB:.0f} MiB traced, budget {BUDGET / MiB:.0f} MiB"
    assert budget.peak <= BUDGET
    assert budget.peak == BUDGET  # the uploads did contend for it
    assert budget.in_use == 0  # every part's bytes given back
    for index, digest in enumerate(digests):
        stream = await s3_store.open(digest)
        assert stream is not None
        hasher = hashlib.sha256()
        async for chunk in stream:
            hasher.update(chunk)
        assert f"sha256:{hasher.hexdigest()}" == digest, index


async def test_a_cancelled_upload_gives_its_budget_back(s3_store: S3BlobStore) -> None:
    """An upload cancelled while it waits for the budget, and one cancelled while it holds
    part of it, leave nothing taken: later uploads get the whole budget."""
    budget = s3_store.budget
    arrived = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * (STREAM_PART + 1)  # one part sent, the next one filling
        arrived.set()
        await asyncio.Event().wait()  # a client that stops sending
        yield b""

    async def never_accept(_size: int, _publish: Any) -> None:
        raise AssertionError("not reached")

    holders = [
        asyncio.create_task(
            s3_store.store_blob(f"sha256:{index:064x}", slow(), lambda _b: None, never_accept)
        )
        for index in range(4)
    ]
    await asyncio.wait_for(arrived.wait(), 30)
    deadline = asyncio.get_running_loop().time() + 30
    while budget.in_use < budget.limit:  # some hold parts, the others wait their turn
        assert asyncio.get_running_loop().time() < deadline, budget.in_use
        await asyncio.sleep(0.05)
    for task in holders:
        task.cancel()
    results = await asyncio.gather(*holders, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results), results
    assert budget.in_use == 0
    data = os.urandom(STREAM_PART * 3)

    async def body() -> AsyncIterator[bytes]:
        yield data

    async def accept(_size: int, publish: Any) -> None:
        await publish()

    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert await asyncio.wait_for(s3_store.store_blob(digest, body(), lambda _b: None, accept), 60) == len(
        data
    )
    assert budget.in_use == 0
