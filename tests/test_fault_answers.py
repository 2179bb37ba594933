"""Faults answer as faults (issue 10 item 16): while PostgreSQL is down /v2 and /api/v0 answer
503 UNAVAILABLE (not 500) and /readyz says not ready; once it is back the registry recovers on
its own. A full disk under the blob store answers 507 and /readyz says so until space is freed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import tmpfs
from .oci import Image, error_codes, push_image
from .postgres import PostgresCluster, create_database
from .server import WharfServer


def _until(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL of the test's own, which it may stop and start again."""
    instance = PostgresCluster().start()
    yield instance
    instance.stop()


def test_postgresql_down_answers_503_and_the_registry_recovers(cluster, s3_server, make_server):
    from wharf.meta import migrate

    url = create_database(cluster.url)
    migrate.upgrade(url)
    server: WharfServer = make_server(
        {
            "database": {"url": url},
            "storage": {
                "s3": s3_server.storage_config(f"wharf/{uuid.uuid4().hex}"),
                "redirect": {"disable": True},
            },
            "jobs": {"enabled": False},
        }
    )
    image = Image.random(layers=1, size=64)
    with server.client() as client:
        push_image(client, "fault/app", image, tag="v1")
        cluster.pause()
        try:
            for response in (
                client.get("/v2/fault/app/manifests/v1"),
                client.head("/v2/fault/app/manifests/v1"),
                client.get("/v2/fault/app/tags/list"),
                client.post("/v2/fault/app/blobs/uploads/"),
            ):
                assert response.status_code == 503, response.text
                if response.request.method != "HEAD":
                    assert error_codes(response) == ["UNAVAILABLE"]
            admin = client.get("/api/v0/jobs")
            assert admin.status_code == 503, admin.text
            assert admin.headers["content-type"].startswith("application/json")
            assert error_codes(admin) == ["UNAVAILABLE"]
            assert client.get("/readyz").status_code == 503
        finally:
            cluster.resume()

        def pulled() -> bool:
            return client.get("/v2/fault/app/manifests/v1").status_code == 200

        _until(pulled, "the registry answers again once PostgreSQL is back")
        assert client.get("/readyz").status_code == 200
        push_image(client, "fault/app", Image.random(layers=1, size=64), tag="v2")


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Any]:
    """A 2 MiB tmpfs: the blob store's root (or, on S3, the spool directory)."""
    with tmpfs(tmp_path / "small", "2m") as mount:
        yield mount


@pytest.mark.parametrize("stack", ["sqlite+filesystem", "postgresql+s3"])
def test_a_full_disk_answers_507_until_space_is_freed(request, stack, small_disk, make_server, tmp_path):
    from .conftest import stack_config

    with stack_config(request, stack) as config:
        if "s3" in config.get("storage", {}):
            config["storage"]["s3"]["spooldirectory"] = str(small_disk)
        else:
            # The database elsewhere: this is about the blob store's disk.
            config = {
                "storage": {"filesystem": {"rootdirectory": str(small_disk / "data")}},
                "database": {"url": f"sqlite:///{tmp_path / 'wharf.db'}"},
            }
        server: WharfServer = make_server({**config, "jobs": {"enabled": False}})
        try:
            _full_disk(server, small_disk)
        finally:
            server.stop()


def _fill(disk: Any) -> Any:
    """Another user of the disk takes all the room left."""
    import os

    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def _full_disk(server: WharfServer, disk: Any) -> None:
    """Chunked uploads: on S3 their bytes go through the spool directory, on the filesystem
    into the root."""
    import hashlib
    import os

    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        # Larger than the whole disk: refused with 507; the session can be dropped.
        location = client.post("/v2/full/app/blobs/uploads/").headers["Location"]
        response = client.patch(location, content=os.urandom(3 << 20))
        assert response.status_code == 507, response.text
        assert error_codes(response) == ["UNAVAILABLE"]
        assert client.delete(location).status_code == 204

        # Another user of the disk leaves less than a push needs: not ready, pushes get 507.
        filler = _fill(disk)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "full" in ready.text, ready.text
        layer = os.urandom(256 << 10)
        location = client.post("/v2/full/app/blobs/uploads/").headers["Location"]
        response = client.patch(location, content=layer)
        assert response.status_code == 507, response.text

        # Space back: ready again, and the same upload is finished where it stands.
        filler.unlink()
        _until(lambda: client.get("/readyz").status_code == 200, "ready once space is freed")
        last = int(client.get(location).headers["Range"].split("-")[1])
        offset = last + 1 if last else 0  # "0-0" is an empty upload (chunks here are 64 KiB)
        response = client.patch(
            location,
            content=layer[offset:],
            headers={"Content-Range": f"{offset}-{len(layer) - 1}"},
        )
        assert response.status_code == 202, response.text
        digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        done = client.put(response.headers["Location"], params={"digest": digest})
        assert done.status_code == 201, done.text
        assert client.get(f"/v2/full/app/blobs/{digest}").content == layer
        push_image(client, "full/app", Image.random(layers=1, size=64), tag="v1")


def _s3_config(request: pytest.FixtureRequest, spool: Any, tmp_path: Path) -> dict[str, Any]:
    """S3 with a spool directory of the test's; the database a SQLite file of its own (S3
    needs a database.url: a local one is enough for one process)."""
    s3 = request.getfixturevalue("s3_server")
    storage = {"s3": {**s3.storage_config(f"wharf/{uuid.uuid4().hex}"), "spooldirectory": str(spool)}}
    return {
        "database": {"url": f"sqlite:///{tmp_path / 'wharf.db'}"},
        "storage": {**storage, "redirect": {"disable": True}},
        "jobs": {"enabled": False},
    }


def test_a_missing_spool_directory_is_created_and_checked_by_readyz(request, make_server, tmp_path):
    spool = tmp_path / "spool" / "deeper"
    server: WharfServer = make_server(_s3_config(request, spool, tmp_path))
    assert spool.is_dir()
    with server.client() as client:
        location = client.post("/v2/spool/app/blobs/uploads/").headers["Location"]
        assert client.patch(location, content=b"chunk").status_code == 202
        assert client.get("/readyz").status_code == 200
        spool.rmdir()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and str(spool) in ready.text, ready.text


def test_a_spool_directory_that_cannot_be_made_is_refused_at_start(request, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    directory = tmp_path / "server"
    directory.mkdir()
    server = WharfServer(directory, _s3_config(request, blocker / "spool", tmp_path))
    with pytest.raises(RuntimeError) as refused:
        server.start()
    assert "storage.s3.spooldirectory" in str(refused.value)


def test_sqlite_on_a_full_disk_answers_507_and_pulls_go_on(small_disk, make_server):
    # The embedded defaults: the database in the storage root, on the same disk.
    server: WharfServer = make_server(
        {"storage": {"filesystem": {"rootdirectory": str(small_disk / "data")}}, "jobs": {"enabled": False}}
    )
    image = Image.random(layers=1, size=64)
    with server.client() as client:
        push_image(client, "full/db", image, tag="v1")
        filler = _fill(small_disk)
        for response in (
            client.put(
                "/v2/full/db/manifests/v2", content=image.manifest, headers={"Content-Type": image.media_type}
            ),
            client.delete("/v2/full/db/manifests/v1"),
        ):
            assert response.status_code == 507, response.text
            assert error_codes(response) == ["UNAVAILABLE"]
        assert client.get("/v2/full/db/manifests/v1").status_code == 200
        filler.unlink()
        put = client.put(
            "/v2/full/db/manifests/v2", content=image.manifest, headers={"Content-Type": image.media_type}
        )
        assert put.status_code == 201, put.text


def test_only_faults_are_taken_for_faults():
    """What faults.py calls a fault; a bug stays a 500 (and is logged as one)."""
    import errno
    import sqlite3

    import sqlalchemy as sa

    from wharf.faults import fault

    def status(error: BaseException) -> int | None:
        found = fault(error)
        return None if found is None else found.status

    def wrapped(cause: BaseException, outer: BaseException) -> BaseException:
        outer.__cause__ = cause
        return outer

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert status(OSError(errno.ENOSPC, "No space left on device")) == 507
    assert status(wrapped(OSError(errno.EDQUOT, "quota"), RuntimeError("store failed"))) == 507
    assert status(sa.exc.OperationalError("INSERT", {}, full)) == 507
    assert status(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) == 503
    assert status(sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))) == 503
    # Bugs: too many parameters (asyncpg's InterfaceError), a missing file, a bad value.
    assert (
        status(sa.exc.InterfaceError("SELECT", {}, Exception("query arguments cannot exceed 32767"))) is None
    )
    assert status(FileNotFoundError(errno.ENOENT, "gone")) is None
    assert status(ValueError("no")) is None
    # The object store: its 5xx and a request it never answered are faults; its 4xx are not.
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    def answered(code: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": str(code)}, "ResponseMetadata": {"HTTPStatusCode": code}}, "PutObject"
        )

    assert status(answered(500)) == 503
    assert status(answered(503)) == 503
    assert status(wrapped(answered(502), RuntimeError("store failed"))) == 503
    assert status(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")) == 503
    assert status(ReadTimeoutError(endpoint_url="http://127.0.0.1:1")) == 503
    assert status(answered(403)) is None
    assert status(answered(404)) is None
