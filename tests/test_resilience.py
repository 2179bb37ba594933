"""Uploads that outlive a server process, and the same content pushed by many clients at once."""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from wharf.meta import migrate
from wharf.meta.schema import metadata

from .oci import OCI_MANIFEST, Image, push_blob, push_manifest, sha256
from .server import WharfServer
from .test_purge import staged


def test_chunked_upload_survives_server_restart(make_server):
    server = make_server()
    data = os.urandom(3 * 1024 * 1024)
    third = len(data) // 3
    with server.client() as client:
        location = client.post("/v2/lib/app/blobs/uploads/").headers["location"]
        response = client.patch(location, content=data[:third], headers={"Content-Range": f"0-{third - 1}"})
        assert response.status_code == 202
    # The hash state lived in the killed process; the next one must rebuild it from storage.
    server.restart(signal.SIGKILL)
    with server.client() as client:
        assert client.get(location).headers["range"] == f"0-{third - 1}"
        response = client.patch(
            location, content=data[third : 2 * third], headers={"Content-Range": f"{third}-{2 * third - 1}"}
        )
        assert response.status_code == 202, response.text
    server.restart()
    with server.client() as client:
        response = client.put(location, params={"digest": sha256(data)}, content=data[2 * third :])
        assert response.status_code == 201, response.text
        assert client.get(f"/v2/lib/app/blobs/{sha256(data)}").content == data


def test_chunks_spread_over_several_workers_complete(make_server):
    server = make_server({"http": {"workers": 2}})
    data = os.urandom(2 * 1024 * 1024)
    step = 128 * 1024
    with server.client() as client:
        location = client.post("/v2/lib/app/blobs/uploads/").headers["location"]
    for offset in range(0, len(data), step):
        # A new connection per chunk lands on whichever worker accepts it.
        with server.client() as client:
            chunk = data[offset : offset + step]
            response = client.patch(
                location, content=chunk, headers={"Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
            )
            assert response.status_code == 202, response.text
    with server.client() as client:
        assert client.put(location, params={"digest": sha256(data)}).status_code == 201
        assert sha256(client.get(f"/v2/lib/app/blobs/{sha256(data)}").content) == sha256(data)


def test_same_blob_pushed_by_many_clients_at_once(server, repo):
    data = os.urandom(4 * 1024 * 1024)
    digest = sha256(data)

    def push(index: int) -> int:
        with server.client() as client:
            if index % 2:
                return client.post(
                    f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data
                ).status_code
            location = client.post(f"/v2/{repo}-{index}/blobs/uploads/").headers["location"]
            half = len(data) // 2
            client.patch(location, content=data[:half], headers={"Content-Range": f"0-{half - 1}"})
            return client.put(location, params={"digest": digest}, content=data[half:]).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(push, range(8)))
    assert statuses == [201] * 8
    with server.client() as client:
        assert sha256(client.get(f"/v2/{repo}/blobs/{digest}").content) == digest
        for index in range(0, 8, 2):
            assert client.head(f"/v2/{repo}-{index}/blobs/{digest}").headers["content-length"] == str(
                len(data)
            )


def test_concurrent_tag_pushes_leave_one_consistent_tag(server, repo):
    images = [Image.random(layers=1, size=64) for _ in range(6)]
    with server.client() as client:
        for image in images:
            for blob in image.blobs:
                push_blob(client, repo, blob)

    def push(image: Image) -> int:
        with server.client() as client:
            return push_manifest(client, repo, "latest", image.manifest, OCI_MANIFEST).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(push, images)) == [201] * 6
    with server.client() as client:
        final = client.get(f"/v2/{repo}/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert final.headers["docker-content-digest"] in {image.digest for image in images}
        assert sha256(final.content) == final.headers["docker-content-digest"]
        for image in images:
            assert client.head(f"/v2/{repo}/manifests/{image.digest}").status_code == 200


def test_migrations_build_exactly_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert diff == []


def _open_patch(port: int, location: str, extra: str = "") -> socket.socket:
    """A PATCH whose body is still coming: it holds the upload until finished or dropped."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()
        + b"5\r\naaaaa\r\n"
    )
    return sock


def _wait_until_staged(server: WharfServer, location: str, size: int) -> None:
    """Until the upload's staged bytes on storage are ``size`` long: a PATCH still sending its
    body has then claimed the upload and written what it sent so far."""
    upload_id = location.split("?")[0].rsplit("/", 1)[-1]
    deadline = time.monotonic() + 60
    while (found := staged(server).get(upload_id)) != size:
        assert time.monotonic() < deadline, f"upload {upload_id}: {found} bytes staged, not {size}"
        time.sleep(0.02)


def _finish_patch(sock: socket.socket, tail: bytes = b"") -> str:
    body = (f"{len(tail):x}\r\n".encode() + tail + b"\r\n" if tail else b"") + b"0\r\n\r\n"
    sock.sendall(body)
    sock.settimeout(30)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    sock.close()
    return answer.split(b"\r\n")[0].decode()


@pytest.mark.parametrize("workers", [1, 2])
def test_second_writer_of_an_upload_is_refused_and_acknowledged_bytes_stay(make_server, workers):
    server = make_server({"http": {"workers": workers}})
    with server.client() as client:
        location = client.post("/v2/lib/app/blobs/uploads/").headers["location"]
        first = os.urandom(100)
        assert client.patch(location, content=first, headers={"Content-Range": "0-99"}).status_code == 202
    slow = _open_patch(server.port, location)
    _wait_until_staged(server, location, 105)
    for _ in range(4):  # new connections: with two workers some land on the other process
        with server.client() as client:
            response = client.patch(location, content=b"B" * 50)
            assert response.status_code == 416, response.text
            assert client.get(location).headers["range"] == "0-99"
    assert _finish_patch(slow, b"bbbbb").endswith("202 Accepted")
    with server.client() as client:
        assert client.get(location).headers["range"] == "0-109"
        data = first + b"aaaaabbbbb"
        assert client.put(location, params={"digest": sha256(data)}).status_code == 201
        assert client.get(f"/v2/lib/app/blobs/{sha256(data)}").content == data


def test_failed_chunk_leaves_no_way_to_lose_acknowledged_bytes(make_server):
    """A chunk that fails its length check must not let two later requests write at once."""
    server = make_server()
    with server.client() as client:
        location = client.post("/v2/lib/app/blobs/uploads/").headers["location"]
    short = _open_patch(server.port, location, "Content-Range: 0-9\r\n")  # declares 10, sends 5
    _wait_until_staged(server, location, 5)
    assert " 416 " in _finish_patch(short)
    waiting = _open_patch(server.port, location)
    _wait_until_staged(server, location, 5)  # cut back to 0 by the refusal, then written again
    with server.client() as client:
        refused = client.patch(location, content=b"B" * 100)
        assert refused.status_code == 416
    assert _finish_patch(waiting).endswith("202 Accepted")
    with server.client() as client:
        assert client.get(location).headers["range"] == "0-4"
        assert client.put(location, params={"digest": sha256(b"aaaaa")}).status_code == 201


def test_cancel_during_a_patch_leaves_nothing(make_server):
    server = make_server()
    with server.client() as client:
        location = client.post("/v2/lib/app/blobs/uploads/").headers["location"]
    writing = _open_patch(server.port, location)
    _wait_until_staged(server, location, 5)
    with server.client() as client:
        assert client.delete(location).status_code == 204
    assert " 404 " in _finish_patch(writing, b"more")
    with server.client() as client:
        assert client.get(location).status_code == 404
    assert not any((server.root / "wharf/uploads").iterdir())


def test_bytes_stored_but_never_acknowledged_are_adopted(make_server):
    """A request stored its bytes and died before the row said so: the client is told where
    the upload really ends and resumes there, instead of being stuck."""
    server = make_server()
    first, lost, rest = os.urandom(1000), os.urandom(500), os.urandom(300)
    with server.client() as client:
        location = client.post("/v2/lib/app/blobs/uploads/").headers["location"]
        assert client.patch(location, content=first, headers={"Content-Range": "0-999"}).status_code == 202
        upload_id = location.rsplit("/", 1)[1]
        with (server.root / "wharf/uploads" / upload_id / "data").open("ab") as data:
            data.write(lost)  # what the dead request had written
        refused = client.patch(location, content=rest, headers={"Content-Range": "1000-1299"})
        assert refused.status_code == 416
        assert refused.headers["range"] == "0-1499"
        resumed = client.patch(location, content=rest, headers={"Content-Range": "1500-1799"})
        assert resumed.status_code == 202, resumed.text
        whole = first + lost + rest
        assert client.put(location, params={"digest": sha256(whole)}).status_code == 201
        assert client.get(f"/v2/lib/app/blobs/{sha256(whole)}").content == whole
