"""Blob uploads over /v2: sessions, monolithic, chunked, mounts, status, cancel, and their errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import STACKS, stack_config
from .oci import error_codes, push_blob, sha256
from .server import WharfServer, deep_merge


def start(client: httpx.Client, repo: str) -> str:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202
    assert response.headers["range"] == "0-0"
    assert response.headers["docker-upload-uuid"]
    location = response.headers["location"]
    assert location.startswith(f"/v2/{repo}/blobs/uploads/")
    return location


def test_monolithic_push_stores_blob_and_answers_location(client, repo):
    data = os.urandom(5000)
    digest = sha256(data)
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/{repo}/blobs/{digest}"
    assert response.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_post_then_put_with_body(client, repo):
    data = os.urandom(3000)
    location = start(client, repo)
    response = client.put(location, params={"digest": sha256(data)}, content=data)
    assert response.status_code == 201
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").headers["content-length"] == "3000"


def test_chunked_upload_reports_progress_and_completes(client, repo):
    data = os.urandom(100_000)
    location = start(client, repo)
    offset = 0
    for size in (40_000, 40_000, 20_000):
        chunk = data[offset : offset + size]
        response = client.patch(
            location,
            content=chunk,
            headers={
                "Content-Range": f"{offset}-{offset + size - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert response.status_code == 202, response.text
        offset += size
        assert response.headers["range"] == f"0-{offset - 1}"
        location = response.headers["location"]
        status = client.get(location)
        assert status.status_code == 204
        assert status.headers["range"] == f"0-{offset - 1}"
    response = client.put(location, params={"digest": sha256(data)})
    assert response.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_streamed_patch_without_content_range(client, repo):
    data = os.urandom(70_000)
    location = start(client, repo)
    response = client.patch(location, content=iter([data[:30_000], data[30_000:]]))
    assert response.status_code == 202
    assert response.headers["range"] == f"0-{len(data) - 1}"
    assert client.put(location, params={"digest": sha256(data)}).status_code == 201


def test_out_of_order_chunk_is_refused_and_upload_unchanged(client, repo):
    location = start(client, repo)
    first = os.urandom(1000)
    client.patch(location, content=first, headers={"Content-Range": "0-999"})
    skipped = client.patch(location, content=b"x" * 10, headers={"Content-Range": "2000-2009"})
    assert skipped.status_code == 416
    assert error_codes(skipped) == ["RANGE_INVALID"]
    # The refusal says where the upload stands, so the client can resume from there.
    assert skipped.headers["range"] == "0-999"
    assert skipped.headers["location"] == location
    repeated = client.patch(location, content=first, headers={"Content-Range": "0-999"})
    assert repeated.status_code == 416
    assert client.get(location).headers["range"] == "0-999"
    assert client.put(location, params={"digest": sha256(first)}).status_code == 201


def test_content_range_that_disagrees_with_length_is_refused(client, repo):
    location = start(client, repo)
    response = client.patch(location, content=b"y" * 10, headers={"Content-Range": "0-19"})
    assert response.status_code == 416
    assert client.get(location).headers["range"] == "0-0"


def test_wrong_digest_is_refused_and_nothing_stored(client, repo):
    data = os.urandom(2048)
    wrong = sha256(b"something else")
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=data)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404

    location = start(client, repo)
    client.patch(location, content=data)
    response = client.put(location, params={"digest": wrong})
    assert error_codes(response) == ["DIGEST_INVALID"]
    assert client.get(location).status_code == 404  # the failed upload is gone


def test_malformed_digest_is_digest_invalid(client, repo):
    for digest in ("sha256:abc", "md5:" + "a" * 32, "sha256:" + "G" * 64, "nodigest"):
        response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=b"x")
        assert response.status_code == 400, digest
        assert error_codes(response) == ["DIGEST_INVALID"]


def test_put_without_digest_is_refused(client, repo):
    location = start(client, repo)
    response = client.put(location, content=b"abc")
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]


def test_sha512_digest_is_verified(client, repo):
    import hashlib

    data = os.urandom(4096)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert response.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_cancel_upload(client, repo):
    location = start(client, repo)
    client.patch(location, content=b"partial")
    assert client.delete(location).status_code == 204
    assert client.get(location).status_code == 404
    response = client.patch(location, content=b"more")
    assert response.status_code == 404
    assert error_codes(response) == ["BLOB_UPLOAD_UNKNOWN"]


def test_unknown_or_foreign_upload_is_blob_upload_unknown(client, repo):
    for upload in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", "..%2e"):
        response = client.get(f"/v2/{repo}/blobs/uploads/{upload}")
        assert response.status_code == 404, upload
        assert error_codes(response) == ["BLOB_UPLOAD_UNKNOWN"]
    # An encoded slash makes the path no endpoint at all: still a 404, never a file.
    response = client.get(f"/v2/{repo}/blobs/uploads/..%2f..%2f..%2fconfig.yml")
    assert response.status_code == 404
    assert error_codes(response) == ["NAME_UNKNOWN"]
    location = start(client, repo)
    other = location.replace(repo, repo + "-other")
    response = client.patch(other, content=b"x")
    assert response.status_code == 404
    assert error_codes(response) == ["BLOB_UPLOAD_UNKNOWN"]


def test_cross_repository_mount(client, repo):
    data = os.urandom(4000)
    digest = push_blob(client, repo, data)
    target = repo + "-mounted"
    response = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": repo})
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/{target}/blobs/{digest}"
    assert response.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/{target}/blobs/{digest}").content == data


def test_mount_falls_back_to_session_when_source_lacks_blob(client, repo):
    data = os.urandom(100)
    response = client.post(
        f"/v2/{repo}/blobs/uploads/", params={"mount": sha256(data), "from": repo + "-empty"}
    )
    assert response.status_code == 202
    assert (
        client.put(response.headers["location"], params={"digest": sha256(data)}, content=data).status_code
        == 201
    )


def test_blob_pushed_to_one_repository_is_not_readable_from_another(client, repo):
    digest = push_blob(client, repo, os.urandom(64))
    response = client.get(f"/v2/{repo}-elsewhere/blobs/{digest}")
    assert response.status_code == 404
    assert error_codes(response) == ["BLOB_UNKNOWN"]


def test_interrupted_body_leaves_upload_at_its_last_offset(server, repo):
    """A client that dies half way through a PATCH loses that request only."""
    import socket

    with server.client() as client:
        location = start(client, repo)
        first = os.urandom(1000)
        client.patch(location, content=first, headers={"Content-Range": "0-999"})
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            f"Content-Range: 1000-100999\r\n\r\n"
        )
        sock.sendall(head.encode() + b"z" * 5000)
    with server.client() as client:
        for _ in range(50):
            status = client.get(location)
            if status.headers.get("range") == "0-999":
                break
        assert status.headers["range"] == "0-999"
        rest = os.urandom(500)
        response = client.patch(location, content=rest, headers={"Content-Range": "1000-1499"})
        assert response.status_code == 202, response.text
        assert client.put(location, params={"digest": sha256(first + rest)}).status_code == 201
        assert client.get(f"/v2/{repo}/blobs/{sha256(first + rest)}").content == first + rest


@pytest.fixture(params=STACKS)
def limited_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WharfServer]:
    """A registry whose repositories may each hold three upload sessions open."""
    with stack_config(request, request.param) as config:
        instance = WharfServer(tmp_path, deep_merge(config, {"uploads": {"maxopen": 3}})).start()
        yield instance
        instance.stop()


def test_a_repository_holds_a_bounded_number_of_open_uploads(limited_server):
    """One client opening sessions by the thousand cannot hold a repository's uploads (and
    each process's hash states) hostage: past uploads.maxopen a POST gets 429, naming the
    repository and the limit; finishing or cancelling one makes room; others are not held."""
    with limited_server.client() as client:
        opened = [start(client, "lib/bounded") for _ in range(3)]
        refused = client.post("/v2/lib/bounded/blobs/uploads/")
        assert refused.status_code == 429
        [error] = refused.json()["errors"]
        assert error["code"] == "TOOMANYREQUESTS"
        assert "lib/bounded" in error["message"] and "uploads.maxopen" in error["message"]
        assert error["detail"] == {"repository": "lib/bounded", "open": 3, "limit": 3}
        # A monolithic push opens no session: it is never refused for this.
        data = os.urandom(100)
        assert push_blob(client, "lib/bounded", data) == sha256(data)
        start(client, "lib/other")  # another repository has its own room

        assert client.delete(opened[0]).status_code == 204
        data = os.urandom(200)
        assert client.put(opened[1], params={"digest": sha256(data)}, content=data).status_code == 201
        start(client, "lib/bounded")
        start(client, "lib/bounded")
        assert client.post("/v2/lib/bounded/blobs/uploads/").status_code == 429
