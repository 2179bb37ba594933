"""Blob reads and deletes over /v2: HEAD, GET, byte ranges, DELETE, and their errors."""

from __future__ import annotations

import os

from .oci import error_codes, push_blob, sha256


def test_head_reports_size_and_digest_without_body(client, repo):
    data = os.urandom(1234)
    digest = push_blob(client, repo, data)
    response = client.head(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200
    assert response.headers["content-length"] == "1234"
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert response.content == b""


def test_get_returns_exact_bytes(client, repo):
    data = os.urandom(3 * 1024 * 1024 + 7)
    digest = push_blob(client, repo, data)
    response = client.get(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200
    assert response.headers["docker-content-digest"] == digest
    assert sha256(response.content) == digest


def test_byte_ranges(client, repo):
    data = os.urandom(10_000)
    digest = push_blob(client, repo, data)
    url = f"/v2/{repo}/blobs/{digest}"
    cases = {
        "bytes=0-99": (0, 100),
        "bytes=9990-": (9990, 10_000),
        "bytes=-10": (9990, 10_000),
        "bytes=5000-20000": (5000, 10_000),
    }
    for header, (start, end) in cases.items():
        response = client.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == data[start:end], header
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/10000"


def test_unsatisfiable_range_is_416_with_spec_body(client, repo):
    digest = push_blob(client, repo, os.urandom(100))
    for header in ("bytes=100-", "bytes=500-600", "bytes=50-10", "lines=1-2"):
        response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
        assert response.status_code == 416, header
        assert error_codes(response) == ["RANGE_INVALID"]
        assert response.headers["content-range"] == "bytes */100"


def test_unknown_blob_is_blob_unknown(client, repo):
    digest = sha256(b"never pushed")
    for method in ("GET", "HEAD"):
        response = client.request(method, f"/v2/{repo}/blobs/{digest}")
        assert response.status_code == 404
    assert error_codes(client.get(f"/v2/{repo}/blobs/{digest}")) == ["BLOB_UNKNOWN"]


def test_invalid_digest_and_name_are_refused(client, repo):
    response = client.get(f"/v2/{repo}/blobs/sha256:short")
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    digest = sha256(b"x")
    # In the namespace of ``repo``, which the writer stack's writer may push to.
    # ("a/../b" is not here: httpx sends it as /v2/test/b/..., a valid name.)
    names = ("UPPER/case", "a//b", "-lead", "trail-", "x" * 251)
    for name in (f"test/{name}" for name in names):
        response = client.get(f"/v2/{name}/blobs/{digest}")
        assert response.status_code == 400, name
        assert error_codes(response) == ["NAME_INVALID"], name


def test_delete_unlinks_blob_from_repository_only(client, repo):
    data = os.urandom(500)
    digest = push_blob(client, repo, data)
    other = repo + "-other"
    push_blob(client, other, data)
    response = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 202
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert client.get(f"/v2/{other}/blobs/{digest}").content == data
    again = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert again.status_code == 404
    assert error_codes(again) == ["BLOB_UNKNOWN"]


def test_blob_delete_refused_when_deletes_disabled(make_server):
    server = make_server({"storage": {"delete": {"enabled": False}}})
    with server.client() as client:
        digest = push_blob(client, "lib/app", b"data")
        response = client.delete(f"/v2/lib/app/blobs/{digest}")
        assert response.status_code == 405
        assert error_codes(response) == ["UNSUPPORTED"]
        assert "storage.delete.enabled" in response.json()["errors"][0]["message"]
        assert client.head(f"/v2/lib/app/blobs/{digest}").status_code == 200


def test_readonly_refuses_writes_and_serves_reads(make_server):
    server = make_server()
    with server.client() as client:
        digest = push_blob(client, "lib/app", b"before maintenance")
    server.stop()
    server.config["storage"]["maintenance"] = {"readonly": {"enabled": True}}
    server.start()
    with server.client() as client:
        assert client.get(f"/v2/lib/app/blobs/{digest}").content == b"before maintenance"
        for response in (
            client.post("/v2/lib/app/blobs/uploads/"),
            client.post("/v2/lib/app/blobs/uploads/", params={"digest": sha256(b"n")}, content=b"n"),
            client.delete(f"/v2/lib/app/blobs/{digest}"),
            client.put("/v2/lib/app/manifests/v1", content=b"{}"),
        ):
            assert response.status_code == 405
            assert error_codes(response) == ["UNSUPPORTED"]
            assert "read-only" in response.json()["errors"][0]["message"]


def test_blob_whose_bytes_are_gone_answers_404_not_a_broken_200(make_server):
    server = make_server()
    with server.client() as client:
        digest = push_blob(client, "lib/app", b"bytes that will vanish")
        hex_ = digest.split(":")[1]
        (server.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data").unlink()
        response = client.get(f"/v2/lib/app/blobs/{digest}")
        assert response.status_code == 404
        assert error_codes(response) == ["BLOB_UNKNOWN"]
        # HEAD too: a stale "exists" would make clients skip the upload that repairs it.
        assert client.head(f"/v2/lib/app/blobs/{digest}").status_code == 404
        assert push_blob(client, "lib/app", b"bytes that will vanish") == digest
        assert client.get(f"/v2/lib/app/blobs/{digest}").content == b"bytes that will vanish"


def test_blob_named_by_a_manifest_stays_readable_after_its_link_is_deleted(client, repo):
    from .oci import Image, push_image

    image = Image.random(layers=1)
    push_image(client, repo, image, "v1")
    layer = sha256(image.layers[0])
    assert client.delete(f"/v2/{repo}/blobs/{layer}").status_code == 202
    assert client.get(f"/v2/{repo}/blobs/{layer}").content == image.layers[0]
    assert client.delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202
    assert client.get(f"/v2/{repo}/blobs/{layer}").status_code == 404
