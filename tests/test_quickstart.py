"""The README's quick start, run as written: its Docker example with Debian's docker on a
private daemon, its skopeo example with umoci, and `pip install .` leaving the checkout
clean. Only the address moves (127.0.0.1:5000 may be taken here)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import DEBIAN_DOCKER, apt_tool
from .server import WharfServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
ADDRESS = "127.0.0.1:5000"


def readme_block(containing: str) -> str:
    """The README's ```sh block that contains ``containing``, as written."""
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.M | re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"README.md has {len(found)} sh blocks with {containing!r}"
    return found[0]


def run_block(block: str, server: WharfServer, cwd: Path, env: dict[str, str]) -> str:
    script = block.replace(ADDRESS, f"127.0.0.1:{server.port}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_readme_docker_example_pushes_and_pulls(make_server, docker_env, tmp_path):
    server = make_server()
    block = readme_block("docker push")
    run_block(block, server, tmp_path, docker_env)
    name = f"127.0.0.1:{server.port}/library/hello:v1"
    # Pulled back: the daemon has it again after the rmi.
    inspect = subprocess.run(
        [DEBIAN_DOCKER, "image", "inspect", name], env=docker_env, capture_output=True, text=True
    )
    assert inspect.returncode == 0, inspect.stderr
    with server.client() as client:
        assert client.get("/v2/library/hello/tags/list").json()["tags"] == ["v1"]
        manifest = client.get(
            "/v2/library/hello/manifests/v1",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        ).json()
        (layer,) = manifest["layers"]
        tar = client.get(f"/v2/library/hello/blobs/{layer['digest']}").content
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        member = archive.extractfile("hello.txt")
        assert member is not None and member.read() == b"hello from Wharf\n"


def test_the_readme_skopeo_example_copies_a_layout(make_server, skopeo, tmp_path):
    apt_tool("umoci", "umoci")
    server = make_server()
    block = readme_block("umoci init")
    said = run_block(block, server, tmp_path, dict(os.environ))
    inspected = json.loads(said[said.index("{") :])
    assert inspected["RepoTags"] == ["v1"]
    with server.client() as client:
        assert client.get("/v2/library/app/tags/list").json()["tags"] == ["v1"]


def test_pip_install_leaves_no_untracked_build_directory(tmp_path):
    """`pip install .` builds the wheel in the checkout (setuptools' build/): git must not
    show it. Run on a copy of the checkout's tracked files, as a fresh clone has them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    ).stdout.split(b"\0")
    checkout = tmp_path / "checkout"
    for name in filter(None, (entry.decode() for entry in listed)):
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=checkout, check=True, timeout=60)
    subprocess.run([*git, "add", "-A"], cwd=checkout, check=True, timeout=60)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheels"), "."],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    assert (checkout / "build").is_dir()  # setuptools did build in the checkout
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert not [line for line in status.splitlines() if line.startswith("??")], status
