"""Blob GETs sent to the object store with a presigned URL (storage.redirect, as in Distribution)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx

from .oci import push_blob, sha256


def database(tmp_path: Path) -> dict[str, str]:
    return {"url": f"sqlite:///{tmp_path / 'wharf.db'}"}  # S3 needs a database.url


def test_blob_get_redirects_to_the_object_store(make_server, s3_server, tmp_path):
    storage = {"s3": s3_server.storage_config(f"redirect/{uuid.uuid4().hex}")}
    server = make_server({"database": database(tmp_path), "storage": storage})
    data = os.urandom(300_000)
    with server.client() as client:
        digest = push_blob(client, "lib/app", data)
        response = client.get(f"/v2/lib/app/blobs/{digest}")
        assert response.status_code == 307
        assert response.headers["docker-content-digest"] == digest
        location = response.headers["location"]
        assert location.startswith(s3_server.endpoint)
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in location  # SigV4: what every region accepts
        assert client.head(f"/v2/lib/app/blobs/{digest}").status_code == 200  # HEAD stays here
    with httpx.Client(follow_redirects=True, timeout=60) as follower:
        assert sha256(follower.get(f"{server.url}/v2/lib/app/blobs/{digest}").content) == digest
        ranged = follower.get(f"{server.url}/v2/lib/app/blobs/{digest}", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == data[10:20]
    with server.client() as client:
        # No redirect for a blob the repository may not read.
        assert client.get(f"/v2/lib/other/blobs/{digest}").status_code == 404


def test_redirect_can_be_disabled(make_server, s3_server, tmp_path):
    storage = {"s3": s3_server.storage_config(f"redirect/{uuid.uuid4().hex}"), "redirect": {"disable": True}}
    server = make_server({"database": database(tmp_path), "storage": storage})
    with server.client() as client:
        digest = push_blob(client, "lib/app", b"served here")
        response = client.get(f"/v2/lib/app/blobs/{digest}")
        assert response.status_code == 200 and response.content == b"served here"
