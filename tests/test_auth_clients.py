"""Real clients against a registry with Wharf's accounts on: they meet the 401 challenge,
get a token from /auth/token with the credentials they were given, and push and pull with
it. skopeo, Debian's docker (a private daemon), podman and oras-py; with a password and with
a personal access token in its place."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .accounts import add_token
from .conftest import DEBIAN_DOCKER, apt_tool
from .dtr import ROOT, call, expect, login, users
from .layout import Layout, make_image
from .server import WharfServer

pytestmark = pytest.mark.slow

TIMEOUT = 180


def run(command: list[str], server: WharfServer, env: dict[str, str] | None = None, ok: bool = True) -> str:
    """Run a client; fails the test with its output and the server's log unless it exited as
    ``ok`` says. Returns its stdout and stderr."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    said = result.stdout + result.stderr
    if (result.returncode == 0) != ok:
        log = server.log_path.read_text(errors="replace")[-4000:] if server.log_path.exists() else ""
        pytest.fail(
            f"{' '.join(command)} exited with {result.returncode}\n--- output ---\n{said}\n"
            f"--- {server.log_path} ---\n{log}",
            pytrace=False,
        )
    return said


def tags(server: WharfServer, repository: str) -> list[str]:
    """The repository's tags, as its administrator sees them."""
    with server.client() as client:
        answer = client.get(f"/v2/{repository}/tags/list", auth=ROOT)
    if answer.status_code == 404:
        return []
    assert answer.status_code == 200, answer.text
    found: list[str] = answer.json()["tags"] or []
    return sorted(found)


@pytest.fixture
def host(accounts_server: WharfServer) -> str:
    users(accounts_server, "bob", "carol")
    return f"127.0.0.1:{accounts_server.port}"


@pytest.fixture
def image_layout(tmp_path: Path) -> tuple[Path, str]:
    """An OCI layout holding one image tagged v1, and the image's manifest digest."""
    layout = Layout(tmp_path / "layout")
    digest = layout.add_image(make_image(), "v1")
    return tmp_path / "layout", digest


def test_skopeo_logs_in_and_copies_in_and_out_as_a_writer_and_a_reader_cannot_push(
    skopeo: str, accounts_server: WharfServer, host: str, image_layout: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image_layout
    authfile = tmp_path / "auth.json"
    skopeo_ = [skopeo, "--insecure-policy"]

    def as_(*args: str, ok: bool = True) -> str:
        return run([*skopeo_, *args], accounts_server, ok=ok)

    # Without logging in, the push is refused and nothing is made.
    refused = as_(
        "copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{host}/bob/app:v1", ok=False
    )
    assert "authentication required" in refused or "unauthorized" in refused.lower(), refused
    assert tags(accounts_server, "bob/app") == []

    bob, carol = login("bob"), login("carol")
    as_("login", "--tls-verify=false", "--authfile", str(authfile), "-u", bob[0], "-p", bob[1], host)
    as_(
        "copy",
        "--authfile",
        str(authfile),
        "--dest-tls-verify=false",
        f"oci:{layout}:v1",
        f"docker://{host}/bob/app:v1",
    )
    assert tags(accounts_server, "bob/app") == ["v1"]
    out = tmp_path / "out"
    as_(
        "copy",
        "--authfile",
        str(authfile),
        "--src-tls-verify=false",
        f"docker://{host}/bob/app:v1",
        f"oci:{out}:v1",
    )
    index = json.loads((out / "index.json").read_text())
    assert [entry["digest"] for entry in index["manifests"]] == [digest]

    # carol may read a public repository, not write it.
    with accounts_server.client() as client:
        expect(call(client, "PATCH", "/repositories/bob/app", bob, {"visibility": "public"}), 200)
    carols = tmp_path / "carol.json"
    as_("login", "--tls-verify=false", "--authfile", str(carols), "-u", carol[0], "-p", carol[1], host)
    as_("inspect", "--authfile", str(carols), "--tls-verify=false", f"docker://{host}/bob/app:v1")
    refused = as_(
        "copy",
        "--authfile",
        str(carols),
        "--dest-tls-verify=false",
        f"oci:{layout}:v1",
        f"docker://{host}/bob/app:v2",
        ok=False,
    )
    assert tags(accounts_server, "bob/app") == ["v1"]
    refused = as_(
        "delete", "--authfile", str(carols), "--tls-verify=false", f"docker://{host}/bob/app:v1", ok=False
    )
    assert tags(accounts_server, "bob/app") == ["v1"]

    # A wrong password does not log in.
    as_(
        "login",
        "--tls-verify=false",
        "--authfile",
        str(tmp_path / "x.json"),
        "-u",
        "bob",
        "-p",
        "wrong-password",
        host,
        ok=False,
    )


def test_docker_logs_in_pushes_and_pulls_with_a_password_and_with_a_personal_access_token(
    accounts_server: WharfServer, host: str, docker_env: dict[str, str], tmp_path: Path
) -> None:
    docker = str(DEBIAN_DOCKER)
    context = tmp_path / "hello"
    context.mkdir()
    (context / "hello.txt").write_text("hello from Wharf\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /\n")
    name = f"{host}/bob/hello:v1"
    run([docker, "build", "-t", name, str(context)], accounts_server, docker_env)
    # Not logged in: an anonymous token, which grants no push.
    said = run([docker, "push", name], accounts_server, docker_env, ok=False)
    assert "authentication required to push to bob/hello" in said, said
    assert tags(accounts_server, "bob/hello") == []

    bob = login("bob")
    run([docker, "login", host, "-u", bob[0], "-p", bob[1]], accounts_server, docker_env)
    # docker kept the token server's refresh token and the user name, not the password.
    saved = json.loads((Path(docker_env["DOCKER_CONFIG"]) / "config.json").read_text())["auths"][host]
    assert "identitytoken" in saved and base64.b64decode(saved.get("auth", "")) == b"bob:", saved
    run([docker, "push", name], accounts_server, docker_env)
    assert tags(accounts_server, "bob/hello") == ["v1"]
    run([docker, "rmi", name], accounts_server, docker_env)
    run([docker, "pull", name], accounts_server, docker_env)
    run([docker, "logout", host], accounts_server, docker_env)

    # A personal access token as the password.
    _token_id, secret = add_token(accounts_server.database_url, "bob", "ci")
    result = subprocess.run(
        [docker, "login", host, "-u", "bob", "--password-stdin"],
        input=secret,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=docker_env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run([docker, "tag", name, f"{host}/bob/hello:v2"], accounts_server, docker_env)
    run([docker, "push", f"{host}/bob/hello:v2"], accounts_server, docker_env)
    assert tags(accounts_server, "bob/hello") == ["v1", "v2"]
    run([docker, "logout", host], accounts_server, docker_env)


@pytest.fixture
def short_directory() -> Iterator[Path]:
    """A directory with a short path: podman refuses a run root of over 50 characters."""
    directory = Path(tempfile.mkdtemp(prefix="wharf-podman-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_podman_logs_in_pushes_and_pulls(
    accounts_server: WharfServer,
    host: str,
    image_layout: tuple[Path, str],
    tmp_path: Path,
    short_directory: Path,
) -> None:
    podman = apt_tool("podman", "podman")
    layout, _digest = image_layout
    authfile = tmp_path / "auth.json"
    storage = [
        "--root", str(tmp_path / "podman-root"), "--runroot", str(short_directory),
        "--storage-driver", "vfs", "--events-backend", "file", "--cgroup-manager", "cgroupfs",
    ]  # fmt: skip
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(authfile), "XDG_RUNTIME_DIR": str(tmp_path / "xdg")}
    (tmp_path / "xdg").mkdir()
    bob = login("bob")
    run(
        [podman, *storage, "login", "--tls-verify=false", "-u", bob[0], "-p", bob[1], host],
        accounts_server,
        env,
    )
    # Push an image from the layout, pull it back into podman's storage, push it again elsewhere.
    run([podman, *storage, "pull", "--tls-verify=false", f"oci:{layout}:v1"], accounts_server, env)
    images = run([podman, *storage, "images", "--format", "{{.ID}}"], accounts_server, env).split()
    assert images, "podman pulled nothing from the layout"
    run(
        [podman, *storage, "push", "--tls-verify=false", images[0], f"docker://{host}/bob/app:v1"],
        accounts_server,
        env,
    )
    assert tags(accounts_server, "bob/app") == ["v1"]
    run([podman, *storage, "pull", "--tls-verify=false", f"{host}/bob/app:v1"], accounts_server, env)
    # carol (no access to bob's private repository) cannot pull it.
    run([podman, *storage, "logout", host], accounts_server, env)
    carol = login("carol")
    run(
        [podman, *storage, "login", "--tls-verify=false", "-u", carol[0], "-p", carol[1], host],
        accounts_server,
        env,
    )
    run([podman, *storage, "rmi", "-a", "-f"], accounts_server, env)
    run(
        [podman, *storage, "pull", "--tls-verify=false", f"{host}/bob/app:v1"], accounts_server, env, ok=False
    )


def test_oras_pushes_and_pulls_an_artifact_with_credentials(
    accounts_server: WharfServer, host: str, tmp_path: Path
) -> None:
    import oras.client

    artifact = tmp_path / "notes.txt"
    artifact.write_text("an artifact pushed by oras-py\n")
    # Pushing: HTTP Basic on every request (its "basic" backend). Its token backend asks
    # for a new token only after a 403, so a push that begins with a pull-scoped token
    # (checking for the blob) fails on the 401 that asks for push.
    client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    bob = login("bob")
    # oras-py's login() goes through a Docker daemon; its credentials are these.
    client.auth.set_basic_auth(bob[0], bob[1])
    client.push(f"{host}/bob/notes:v1", files=[str(artifact)], disable_path_validation=True)
    assert tags(accounts_server, "bob/notes") == ["v1"]
    # Pulling with its default backend: a token from /auth/token for these credentials.
    puller = oras.client.OrasClient(hostname=host, insecure=True)
    puller.auth.set_basic_auth(bob[0], bob[1])
    out = tmp_path / "out"
    pulled = puller.pull(f"{host}/bob/notes:v1", outdir=str(out))
    assert [Path(path).read_text() for path in pulled] == [artifact.read_text()]

    stranger = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    stranger.auth.set_basic_auth(*login("carol"))
    with pytest.raises(ValueError):
        stranger.pull(f"{host}/bob/notes:v1", outdir=str(tmp_path / "nothing"))
    assert not (tmp_path / "nothing").exists() or not any((tmp_path / "nothing").iterdir())
