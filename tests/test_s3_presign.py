"""S3 redirects: a presigned URL is signed once and handed out again while most of it is left."""

from __future__ import annotations

import pytest

from wharf.storage import s3
from wharf.storage.s3 import S3BlobStore

ONE = "sha256:" + "a" * 64
TWO = "sha256:" + "b" * 64


@pytest.fixture
def store(tmp_path):
    # Signing is local: no object store needs to answer.
    return S3BlobStore(
        "bucket",
        endpoint="http://127.0.0.1:9",
        access_key="key",
        secret_key="secret",
        path_style=True,
        spool_directory=str(tmp_path),
    )


async def test_presigned_url_is_reused_while_most_of_its_validity_is_left(store, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(s3.time, "monotonic", lambda: clock[0])
    first = await store.url(ONE, 1200)
    assert first is not None and "X-Amz-Signature=" in first and "X-Amz-Expires=1200" in first
    clock[0] += 1200 * s3.PRESIGN_REUSE - 1
    assert await store.url(ONE, 1200) == first
    other = await store.url(TWO, 1200)
    assert other is not None and other != first and TWO.split(":")[1] in other
    assert "X-Amz-Expires=60" in (await store.url(ONE, 60) or "")  # another validity, another URL
    clock[0] += 2
    renewed = await store.url(ONE, 1200)
    assert renewed is not None and "X-Amz-Expires=1200" in renewed
    assert store._presigned[(ONE, 1200)] == (clock[0], renewed)  # signed again, kept from now


async def test_presigned_urls_kept_are_bounded(store, monkeypatch):
    monkeypatch.setattr(s3, "PRESIGNED_KEPT", 3)
    digests = [f"sha256:{i:064x}" for i in range(5)]
    for digest in digests:
        await store.url(digest, 1200)
    assert [key[0] for key in store._presigned] == digests[-3:]
