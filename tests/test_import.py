"""Adopting a CNCF Distribution directory: images pushed with skopeo into Debian's
docker-registry come back out of Wharf after `wharf import-distribution`, and Wharf's GC dry
run names the same blobs as Distribution's. On SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from .distribution import Distribution
from .gc import eligible, gc_env, run_gc
from .layout import Layout, make_image, make_index
from .server import WharfServer
from .test_skopeo import all_digests, assert_layout_holds

pytestmark = pytest.mark.slow


def skopeo_copy(skopeo: str, *args: str) -> None:
    command = [
        skopeo,
        "--insecure-policy",
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"


def import_distribution(root: Path, config: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "wharf", "import-distribution", "--config", str(config), str(root)],
        capture_output=True,
        text=True,
        env=gc_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def test_import_a_distribution_directory_and_collect_the_same_garbage(
    skopeo, docker_registry, database_url, tmp_path
):
    source = Layout(tmp_path / "source")
    kept, doomed, other = make_image(), make_image(), make_image("arm64")
    multi = make_index(("amd64", "arm64"))
    source.add_image(kept, "kept")
    source.add_image(doomed, "doomed")
    source.add_image(other, "other")
    source.add_index(multi, "multi")

    distribution = Distribution(docker_registry, tmp_path).start()
    try:
        for repo, tag in (
            ("lib/app", "kept"),
            ("lib/app", "doomed"),
            ("team/tools/other", "other"),
            ("lib/multi", "multi"),
        ):
            skopeo_copy(skopeo, f"oci:{source.path}:{tag}", f"docker://{distribution.address}/{repo}:{tag}")
        deleted = httpx.delete(f"http://{distribution.address}/v2/lib/app/manifests/{doomed.digest}")
        assert deleted.status_code == 202, deleted.text
    finally:
        distribution.stop()
    expected_garbage = eligible(distribution.garbage_collect("--dry-run"))
    assert expected_garbage == all_digests(
        doomed
    )  # Distribution's answer: the deleted image, payload included

    root = distribution.root
    config = tmp_path / "wharf.yml"
    config.write_text(
        yaml.safe_dump(
            {"storage": {"filesystem": {"rootdirectory": str(root)}}, "database": {"url": database_url}}
        )
    )
    first = import_distribution(root, config)
    assert "imported 3 repositories: 5 manifests, 3 tags" in first, (
        first
    )  # app: kept; other; multi + 2 children
    again = import_distribution(root, config)
    assert "imported 3 repositories: 0 manifests, 0 tags, 0 blobs added" in again, again

    server = WharfServer(
        tmp_path / "wharf",
        {"storage": {"filesystem": {"rootdirectory": str(root)}}, "database": {"url": database_url}},
    )
    (tmp_path / "wharf").mkdir()
    server.start()
    try:
        for repo, tag, expected in (
            ("lib/app", "kept", kept),
            ("team/tools/other", "other", other),
        ):
            out = tmp_path / f"pulled-{tag}"
            skopeo_copy(skopeo, f"docker://127.0.0.1:{server.port}/{repo}:{tag}", f"oci:{out}:{tag}")
            assert_layout_holds(out, tag, expected.digest, all_digests(expected))
        out = tmp_path / "pulled-multi"
        skopeo_copy(skopeo, f"docker://127.0.0.1:{server.port}/lib/multi:multi", f"oci:{out}:multi")
        wanted = {multi.digest}.union(*(all_digests(child) for child in multi.children.values()))
        pulled = assert_layout_holds(out, "multi", multi.digest, wanted)
        assert [m["platform"]["architecture"] for m in pulled["manifests"]] == ["amd64", "arm64"]
        with server.client() as client:
            assert client.get("/v2/lib/app/tags/list").json()["tags"] == ["kept"]
            assert client.get(f"/v2/lib/app/manifests/{doomed.digest}").status_code == 404

        # Same blob set as Distribution's dry run: the deleted image's layers and config (rows
        # Wharf imported from its layer links) and its manifest's payload (a file Wharf has
        # no row for, since Wharf keeps payloads in its database; a live manifest's payload
        # file is kept, as Distribution keeps it).
        planned = eligible(run_gc(server, "--dry-run", "--grace", "0s", "--scan-storage").stdout)
        assert planned == expected_garbage
        run_gc(server, "--grace", "0s", "--scan-storage")
        assert not (
            root / "docker/registry/v2/blobs/sha256" / doomed.digest[7:9] / doomed.digest[7:]
        ).exists()
        assert eligible(distribution.garbage_collect("--dry-run")) == set()
    finally:
        server.stop()
