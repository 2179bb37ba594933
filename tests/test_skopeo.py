"""Interoperability with Debian's skopeo: push, inspect, list, delete and pull against a real `wharf serve`.

The images are written from Python as OCI image layouts (tests/layout.py), so the expected
digests of every manifest and blob are known before skopeo touches them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from .layout import Layout, LayoutImage, blob_digests, make_image, make_index, read_blob, ref_descriptor
from .oci import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, error_codes, sha256
from .server import WharfServer

TIMEOUT = 120


@pytest.fixture
def run(skopeo: str, server: WharfServer, tmp_path: Path) -> Any:
    """Run one skopeo command; on failure the test fails with skopeo's stderr and the server log.
    Where the server has auth on, skopeo signs in as its clients do (an auth file, as
    `skopeo login` writes)."""
    env = dict(os.environ)
    if server.credentials is not None:
        authfile = tmp_path / "auth.json"
        secret = base64.b64encode(":".join(server.credentials).encode()).decode()
        authfile.write_text(json.dumps({"auths": {f"127.0.0.1:{server.port}": {"auth": secret}}}))
        env["REGISTRY_AUTH_FILE"] = str(authfile)

    def run(*args: str, stderr: bool = False) -> bytes:
        """skopeo's stdout, or its stderr when ``stderr`` (where ``--debug`` writes)."""
        command = [skopeo, "--insecure-policy", *args]
        try:
            result = subprocess.run(command, check=True, capture_output=True, timeout=TIMEOUT, env=env)
        except subprocess.CalledProcessError as error:
            log = server.log_path.read_text(errors="replace")[-4000:] if server.log_path.exists() else ""
            pytest.fail(
                f"{' '.join(command)} exited with {error.returncode}\n"
                f"--- stderr ---\n{error.stderr.decode(errors='replace')}\n"
                f"--- {server.log_path} ---\n{log}",
                pytrace=False,
            )
        return result.stderr if stderr else result.stdout

    return run


@pytest.fixture
def registry(server: WharfServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "source")


def docker(registry: str, repo: str, reference: str) -> str:
    separator = "@" if reference.startswith("sha256:") else ":"
    return f"docker://{registry}/{repo}{separator}{reference}"


def assert_layout_holds(out: Path, tag: str, manifest_digest: str, blobs: set[str]) -> dict[str, Any]:
    """``out`` tags ``manifest_digest`` as ``tag`` and holds exactly ``blobs``, each intact."""
    ref = ref_descriptor(out, tag)
    assert ref["digest"] == manifest_digest
    assert blob_digests(out) == blobs
    for digest in blobs:
        read_blob(out, digest)
    return json.loads(read_blob(out, manifest_digest))


def all_digests(image: LayoutImage) -> set[str]:
    return {image.digest, *(sha256(blob) for blob in image.blobs)}


def test_oci_image_round_trip(run, client, registry, repo, layout, tmp_path):
    image = make_image()
    layout.add_image(image, "v1")
    target = docker(registry, repo, "v1")

    run("copy", "--dest-tls-verify=false", f"oci:{layout.path}:v1", target)

    raw = run("inspect", "--raw", "--tls-verify=false", target)
    assert sha256(raw) == image.digest
    assert raw == image.manifest
    inspected = json.loads(run("inspect", "--tls-verify=false", target))
    assert inspected["Digest"] == image.digest
    assert inspected["Layers"] == image.layer_digests
    assert inspected["Architecture"] == "amd64"
    assert inspected["Os"] == "linux"
    tags = json.loads(run("list-tags", "--tls-verify=false", f"docker://{registry}/{repo}"))
    assert tags["Tags"] == ["v1"]

    response = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_MANIFEST
    assert response.headers["docker-content-digest"] == image.digest

    out = tmp_path / "pulled"
    run("copy", "--src-tls-verify=false", target, f"oci:{out}:v1")
    manifest = assert_layout_holds(out, "v1", image.digest, all_digests(image))
    assert [layer["digest"] for layer in manifest["layers"]] == image.layer_digests
    assert read_blob(out, sha256(image.config)) == image.config


def test_docker_schema2_round_trip(run, client, registry, repo, layout, tmp_path):
    image = make_image()
    layout.add_image(image, "v1")
    target = docker(registry, repo, "v1")

    run("copy", "--dest-tls-verify=false", "--format", "v2s2", f"oci:{layout.path}:v1", target)

    raw = run("inspect", "--raw", "--tls-verify=false", target)
    manifest = json.loads(raw)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert manifest["config"]["digest"] == sha256(image.config)
    assert [layer["mediaType"] for layer in manifest["layers"]] == [DOCKER_LAYER] * 2
    assert [layer["digest"] for layer in manifest["layers"]] == image.layer_digests
    inspected = json.loads(run("inspect", "--tls-verify=false", target))
    assert inspected["Digest"] == sha256(raw)

    response = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert response.status_code == 200
    assert response.headers["content-type"] == DOCKER_MANIFEST
    assert response.headers["docker-content-digest"] == sha256(raw)
    assert response.content == raw

    out = tmp_path / "pulled"
    run("copy", "--src-tls-verify=false", target, f"oci:{out}:v1")
    pulled = json.loads(read_blob(out, ref_descriptor(out, "v1")["digest"]))
    assert pulled["mediaType"] == OCI_MANIFEST  # the oci: transport converts back
    assert [layer["digest"] for layer in pulled["layers"]] == image.layer_digests
    # Converting schema 2 back to OCI re-serialises the config (key order), so compare its content.
    assert json.loads(read_blob(out, pulled["config"]["digest"])) == json.loads(image.config)
    for layer in image.layers:
        assert read_blob(out, sha256(layer)) == layer


def test_multi_arch_index_round_trip(run, client, registry, repo, layout, tmp_path):
    index = make_index(("amd64", "arm64"))
    layout.add_index(index, "multi")
    target = docker(registry, repo, "multi")

    run("copy", "--all", "--dest-tls-verify=false", f"oci:{layout.path}:multi", target)

    raw = run("inspect", "--raw", "--tls-verify=false", target)
    assert raw == index.manifest
    assert json.loads(raw)["mediaType"] == OCI_INDEX
    for arch, child in index.children.items():
        response = client.get(f"/v2/{repo}/manifests/{child.digest}", headers={"Accept": OCI_MANIFEST})
        assert response.status_code == 200, (arch, response.text)
        assert response.content == child.manifest
        assert response.headers["docker-content-digest"] == child.digest
        for blob in child.blobs:
            head = client.head(f"/v2/{repo}/blobs/{sha256(blob)}")
            assert head.status_code == 200, (arch, sha256(blob))
            assert int(head.headers["content-length"]) == len(blob)
    arm = json.loads(run("--override-arch", "arm64", "inspect", "--tls-verify=false", target))
    assert arm["Architecture"] == "arm64"
    assert arm["Layers"] == index.children["arm64"].layer_digests

    out = tmp_path / "pulled"
    run("copy", "--all", "--src-tls-verify=false", target, f"oci:{out}:multi")
    expected = {index.digest}.union(*(all_digests(child) for child in index.children.values()))
    pulled = assert_layout_holds(out, "multi", index.digest, expected)
    assert [m["platform"]["architecture"] for m in pulled["manifests"]] == ["amd64", "arm64"]


def test_delete_by_digest_removes_image_and_its_tags(run, client, registry, repo, layout):
    image, other = make_image(), make_image()
    layout.add_image(image, "v1")
    layout.add_image(other, "keep")
    for source, tag in (("v1", "v1"), ("v1", "alias"), ("keep", "keep")):
        run("copy", "--dest-tls-verify=false", f"oci:{layout.path}:{source}", docker(registry, repo, tag))
    tags = json.loads(run("list-tags", "--tls-verify=false", f"docker://{registry}/{repo}"))
    assert sorted(tags["Tags"]) == ["alias", "keep", "v1"]

    run("delete", "--tls-verify=false", docker(registry, repo, image.digest))

    for reference in (image.digest, "v1", "alias"):
        response = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
        assert response.status_code == 404, reference
        assert error_codes(response) == ["MANIFEST_UNKNOWN"], reference
    tags = json.loads(run("list-tags", "--tls-verify=false", f"docker://{registry}/{repo}"))
    assert tags["Tags"] == ["keep"]
    kept = client.get(f"/v2/{repo}/manifests/keep", headers={"Accept": OCI_MANIFEST})
    assert kept.status_code == 200 and kept.content == other.manifest


def recorded_events(client: httpx.Client, action: str, repository: str) -> set[str]:
    """Digests of the registry's own audit events ``action`` in ``repository``, as
    ``GET /api/v0/activities`` lists them (every page)."""
    digests: set[str] = set()
    start, limit = 0, 1000
    while True:
        response = client.get(
            "/api/v0/activities",
            params={"action": action, "repository": repository, "start": start, "limit": limit},
        )
        assert response.status_code == 200, response.text
        page = response.json()["activities"]
        assert all(a["action"] == action and a["repository"] == repository for a in page), page
        digests.update(a["digest"] for a in page if a["digest"] is not None)
        if len(page) < limit:
            return digests
        start += limit


def test_copy_between_repositories_mounts_blobs(run, client, registry, repo, layout, tmp_path):
    image = make_image()
    layout.add_image(image, "v1")
    first, second = f"{repo}/first", f"{repo}/second"
    run("copy", "--dest-tls-verify=false", f"oci:{layout.path}:v1", docker(registry, first, "v1"))
    # skopeo mounts only blobs its blob-info cache knows a location of. It records locations
    # from concurrent goroutines and now and then loses one (then it uploads that blob, without
    # asking to mount it), so a pull records them a second time.
    run("copy", "--src-tls-verify=false", docker(registry, first, "v1"), f"oci:{tmp_path / 'prime'}:v1")

    debug = run(
        "--debug",
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        docker(registry, first, "v1"),
        docker(registry, second, "v1"),
        stderr=True,
    ).decode(errors="replace")

    mount_request = (
        rf"POST http://\S*/v2/{re.escape(second)}/blobs/uploads/\?\S*mount=sha256%3A([0-9a-f]{{64}})"
    )
    attempted = {"sha256:" + hexdigest for hexdigest in re.findall(mount_request, debug)}
    assert attempted, f"skopeo tried no cross-repository mount:\n{debug[-3000:]}"
    assert attempted <= {sha256(blob) for blob in image.blobs}
    # Every mount skopeo asked for was honoured (201), not answered with an upload session.
    assert attempted <= recorded_events(client, "blob.mount", second)
    assert not attempted & recorded_events(client, "blob.push", second)

    raw = run("inspect", "--raw", "--tls-verify=false", docker(registry, second, "v1"))
    assert raw == image.manifest
    # The mounted blobs belong to the second repository on their own: they outlive the first's image.
    run("delete", "--tls-verify=false", docker(registry, first, image.digest))
    assert client.get(f"/v2/{first}/manifests/{image.digest}").status_code == 404

    out = tmp_path / "pulled"
    run("copy", "--src-tls-verify=false", docker(registry, second, "v1"), f"oci:{out}:v1")
    assert_layout_holds(out, "v1", image.digest, all_digests(image))
    for blob in image.blobs:
        response = client.get(f"/v2/{second}/blobs/{sha256(blob)}")
        assert response.status_code == 200 and response.content == blob
