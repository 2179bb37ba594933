"""Two `wharf serve` replicas on one PostgreSQL and one S3 bucket behave as one registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wharf.meta import migrate

from .layout import Layout, make_image, ref_descriptor
from .oci import OCI_MANIFEST, Image, error_codes, push_image, sha256
from .postgres import create_database, drop_database
from .server import WharfServer


@pytest.fixture
def replicas(
    make_server: Callable[..., WharfServer], postgres_server: str, s3_server: Any
) -> Iterator[tuple[WharfServer, WharfServer]]:
    url = create_database(postgres_server)
    migrate.upgrade(url)
    config = {
        "database": {"url": url},
        "storage": {
            "s3": s3_server.storage_config(f"replicas/{uuid.uuid4().hex}"),
            "redirect": {"disable": True},
        },
    }
    yield make_server(config), make_server(config)
    drop_database(postgres_server, url)


def test_chunked_upload_moves_between_replicas(replicas):
    first, second = replicas
    data = os.urandom(3 * 1024 * 1024)
    a, b = data[: 1 << 20], data[1 << 20 :]
    with first.client() as one, second.client() as two:
        location = one.post("/v2/lib/app/blobs/uploads/").headers["location"]
        assert one.patch(location, content=a, headers={"Content-Range": f"0-{len(a) - 1}"}).status_code == 202
        # The other replica never saw this upload: it rebuilds the hash state from the bucket.
        response = two.patch(location, content=b, headers={"Content-Range": f"{len(a)}-{len(data) - 1}"})
        assert response.status_code == 202, response.text
        assert one.get(location).headers["range"] == f"0-{len(data) - 1}"
        assert one.put(location, params={"digest": sha256(data)}).status_code == 201
        assert two.get(f"/v2/lib/app/blobs/{sha256(data)}").content == data


def test_push_through_one_pull_and_delete_through_the_other(replicas):
    first, second = replicas
    image = Image.random()
    with first.client() as one, second.client() as two:
        push_image(one, "lib/app", image, "v1")
        pulled = two.get("/v2/lib/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert pulled.content == image.manifest
        for blob in image.blobs:
            assert two.get(f"/v2/lib/app/blobs/{sha256(blob)}").content == blob
        assert two.delete(f"/v2/lib/app/manifests/{image.digest}").status_code == 202
        gone = one.get("/v2/lib/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert gone.status_code == 404
        assert error_codes(gone) == ["MANIFEST_UNKNOWN"]


def test_skopeo_copies_in_through_one_and_out_through_the_other(replicas, skopeo, tmp_path: Path):
    first, second = replicas
    layout = Layout(tmp_path / "in")
    image = make_image()
    layout.add_image(image, "v1")

    def run(*args: str) -> bytes:
        result = subprocess.run([skopeo, "--insecure-policy", *args], capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout

    run(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout.path}:v1",
        f"docker://127.0.0.1:{first.port}/lib/app:v1",
    )
    out = tmp_path / "out"
    run("copy", "--src-tls-verify=false", f"docker://127.0.0.1:{second.port}/lib/app:v1", f"oci:{out}:v1")
    assert ref_descriptor(out, "v1")["digest"] == image.digest
    inspected = json.loads(
        run("inspect", "--tls-verify=false", f"docker://127.0.0.1:{second.port}/lib/app:v1")
    )
    assert inspected["Digest"] == image.digest


def test_chunked_upload_survives_a_killed_replica(replicas):
    first, _second = replicas
    data = os.urandom(2 * 1024 * 1024)
    half = len(data) // 2
    with first.client() as client:
        location = client.post("/v2/lib/app/blobs/uploads/").headers["location"]
        assert (
            client.patch(
                location, content=data[:half], headers={"Content-Range": f"0-{half - 1}"}
            ).status_code
            == 202
        )
    first.restart(signal.SIGKILL)
    with first.client() as client:
        assert client.get(location).headers["range"] == f"0-{half - 1}"
        response = client.put(location, params={"digest": sha256(data)}, content=data[half:])
        assert response.status_code == 201, response.text
        assert client.get(f"/v2/lib/app/blobs/{sha256(data)}").content == data
