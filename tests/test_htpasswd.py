"""auth.htpasswd, as Distribution's: HTTP Basic against a file of bcrypt hashes, every user it
knows allowed everything, anonymous clients refused with a Basic challenge; the file read at
start-up (refused, naming the key, the path and the line, when it cannot be used) and again
when it changes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from wharf.services.caller import UNRESTRICTED, Caller
from wharf.services.htpasswd import HtpasswdBasic, HtpasswdError, check_bcrypt

from .layout import Layout, make_image
from .oci import OCI_MANIFEST, error_codes
from .server import WharfServer
from .test_config import serve


def entry(user: str, password: str, prefix: str = "$2y$") -> str:
    """One htpasswd line as `htpasswd -B` writes it ($2y$, cost 5), made with the bcrypt package."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    return f"{user}:{prefix}{hashed[4:]}"


def write_htpasswd(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_the_file_proves_its_users_and_no_one_else(tmp_path):
    path = write_htpasswd(
        tmp_path / "htpasswd",
        "# made with htpasswd -B",
        "",
        "  " + entry("alice", "correct horse") + "  ",
        entry("bob", "battery staple", prefix="$2b$"),
    )
    users = HtpasswdBasic(path)
    assert users.load() == 2
    assert await users.verify("alice", "correct horse") == Caller("alice", UNRESTRICTED)
    assert await users.verify("bob", "battery staple") == Caller("bob", UNRESTRICTED)
    assert await users.verify("alice", "battery staple") is None
    assert await users.verify("carol", "correct horse") is None
    assert await users.verify("alice", "") is None


def test_bcrypt_reads_only_the_first_72_bytes_as_htpasswd_hashed_them():
    long = "x" * 72
    stored = bcrypt.hashpw(long.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert check_bcrypt(stored, long + "and more")  # Apache's htpasswd truncates too
    assert not check_bcrypt(stored, long[:-1])
    assert not check_bcrypt("not a hash", long)


@pytest.mark.parametrize(
    ("lines", "said"),
    [
        (["alice"], "line 1: not user:hash"),
        (["# comment", entry("bob", "battery staple"), ":$2y$05$" + "a" * 53], "line 3: not user:hash"),
        (["carol:$apr1$abcdefgh$0123456789abcdefghijkl"], "line 1: 'carol' has no bcrypt hash"),
        (["dave:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="], "line 1: 'dave' has no bcrypt hash"),
        (["", "erin:$2y$05$tooshort"], "line 2: 'erin' has a malformed bcrypt hash"),
    ],
)
def test_a_line_that_is_not_a_bcrypt_entry_is_named(tmp_path, lines, said):
    path = write_htpasswd(tmp_path / "htpasswd", *lines)
    with pytest.raises(HtpasswdError) as error:
        HtpasswdBasic(path).load()
    message = str(error.value)
    assert message.startswith(f"auth.htpasswd.path: {path}, {said}"), message
    assert "\n" not in message
    assert "$apr1$" not in message and "W6ph" not in message  # a hash is a secret: never shown


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(HtpasswdError, match=f"auth.htpasswd.path: {tmp_path / 'absent'} does not exist"):
        HtpasswdBasic(tmp_path / "absent").load()
    directory = tmp_path / "directory"
    directory.mkdir()
    with pytest.raises(HtpasswdError, match=f"auth.htpasswd.path: cannot read {directory}: Is a directory"):
        HtpasswdBasic(tmp_path / "directory").load()


def htpasswd_config(root: Path, port: int, path: Path, realm: str = "basic-realm") -> str:
    return (
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
        f"storage: {{filesystem: {{rootdirectory: {root}}}}}\n"
        f"auth:\n  htpasswd:\n    realm: {realm}\n    path: {path}\n"
    )


@pytest.mark.parametrize(
    ("lines", "said"),
    [
        (None, "does not exist (Wharf creates none: make it with htpasswd -cB"),
        ([entry("alice", "correct horse"), "bob"], "line 2: not user:hash"),
    ],
)
def test_serve_refuses_a_file_it_cannot_use_in_one_line_and_creates_none(tmp_path, lines, said):
    path = tmp_path / "htpasswd"
    if lines is not None:
        write_htpasswd(path, *lines)
    config = tmp_path / "config.yml"
    config.write_text(htpasswd_config(tmp_path / "data", 5000, path))
    result = serve(config)
    assert result.returncode != 0
    told = result.stderr.strip().splitlines()
    assert len(told) == 1 and told[0].startswith(f"Error: auth.htpasswd.path: {path}"), result.stderr
    assert said in told[0], result.stderr
    if lines is None:
        assert not path.exists()  # Distribution would have made one, with a password of its own
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("auth", "said"),
    [
        ({"htpasswd": {}}, "auth.htpasswd.path is required"),
        ({"htpasswd": {"path": " "}}, "auth.htpasswd.path: must name the htpasswd file"),
        ({"htpasswd": {"path": "/f", "realm": 'a"b'}}, "auth.htpasswd.realm: 'a\"b' cannot be a realm"),
        ({"token": {"realm": "https://auth.example/token"}}, "auth.token.service is required"),
        (
            {"htpasswd": {"path": "/f"}, "accounts": {"enabled": True}},
            "auth: configure one of auth.accounts, auth.htpasswd or auth.token, not accounts and htpasswd",
        ),
    ],
)
def test_auth_settings_that_cannot_be_used_are_refused_by_key(tmp_path, auth, said):
    from wharf.config import ConfigError, load_settings

    path = tmp_path / "config.yml"
    path.write_text(json.dumps({"auth": auth}))
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert said in str(error.value), str(error.value)


@pytest.fixture
def protected(tmp_path: Path) -> tuple[WharfServer, Path]:
    """A registry behind an htpasswd file with alice (its $2y$ hash, as htpasswd -B writes) in it."""
    path = write_htpasswd(tmp_path / "htpasswd", entry("alice", "correct horse"))
    auth = {"htpasswd": {"path": str(path), "realm": "my realm"}}
    server = WharfServer(tmp_path / "server", {"auth": auth})
    server.directory.mkdir()
    server.start()
    yield server, path
    server.stop()


def test_anonymous_clients_are_asked_for_basic_credentials_everywhere(protected):
    server, _path = protected
    challenge = 'Basic realm="my realm"'
    with server.client() as client:
        for path in ("/v2/", "/v2/library/app/tags/list", "/v2/library/app/manifests/latest", "/v2/_catalog"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == challenge, path
            assert error_codes(refused) == ["UNAUTHORIZED"], path
        pushed = client.post("/v2/library/app/blobs/uploads/")
        assert pushed.status_code == 401 and pushed.headers["www-authenticate"] == challenge
        api = client.get("/api/v0/jobs")
        assert api.status_code == 401 and api.headers["www-authenticate"] == challenge
        assert api.json()["errors"][0]["code"] == "UNAUTHORIZED"
        for user, password in [("alice", "wrong horse"), ("bob", "correct horse")]:
            wrong = client.get("/v2/", headers=basic(user, password))
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == challenge
        # Nothing was made by the refused push.
        listed = client.get("/v2/_catalog", headers=basic("alice", "correct horse"))
        assert listed.status_code == 200 and listed.json()["repositories"] == []
        # Health and metrics name no repository and stay open.
        assert client.get("/healthz").status_code == 200


def test_a_user_in_the_file_may_do_everything(protected):
    server, _path = protected
    alice = basic("alice", "correct horse")
    with server.client(headers=alice) as client:
        assert client.get("/v2/").status_code == 200
        assert client.get("/api/v0/jobs").status_code == 200
        started = client.post("/api/v0/admin/jobs", json={"job": "registryGC"})
        assert started.status_code == 202, started.text


def test_the_file_is_read_again_when_it_changes(protected):
    server, path = protected
    with server.client() as client:
        assert client.get("/v2/", headers=basic("bob", "battery staple")).status_code == 401
        replacement = path.with_name("htpasswd.new")
        write_htpasswd(replacement, entry("bob", "battery staple"))
        os.replace(replacement, path)  # as `htpasswd -B` rewrites it
        deadline = time.monotonic() + 30
        while client.get("/v2/", headers=basic("bob", "battery staple")).status_code != 200:
            assert time.monotonic() < deadline, "bob was not let in"
            time.sleep(0.05)
        assert client.get("/v2/", headers=basic("alice", "correct horse")).status_code == 401

        # A rewrite that breaks the file keeps the users read before, and says so.
        path.write_text(path.read_text() + "carol\n")
        assert client.get("/v2/", headers=basic("bob", "battery staple")).status_code == 200
        deadline = time.monotonic() + 30
        while "line 2: not user:hash; keeping the 1 user(s) read before" not in server.log_path.read_text():
            assert time.monotonic() < deadline, server.log_path.read_text()
            time.sleep(0.05)


def test_skopeo_pushes_with_credentials_and_is_refused_without(skopeo, protected, tmp_path):
    server, _path = protected
    layout = Layout(tmp_path / "source")
    image = make_image()
    layout.add_image(image, "v1")
    target = f"docker://127.0.0.1:{server.port}/library/app:v1"
    source = f"oci:{layout.path}:v1"

    def copy(*args: str) -> subprocess.CompletedProcess[str]:
        command = [skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", *args, source, target]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    refused = copy()
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "authentication required" in refused.stderr.lower()
    refused = copy("--dest-creds", "alice:wrong horse")
    assert refused.returncode != 0
    with server.client(headers=basic("alice", "correct horse")) as client:
        assert client.get("/v2/library/app/manifests/v1").status_code == 404

        pushed = copy("--dest-creds", "alice:correct horse")
        assert pushed.returncode == 0, pushed.stderr
        stored = client.get("/v2/library/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert stored.status_code == 200 and stored.content == image.manifest
    assert httpx.get(f"{server.url}/v2/library/app/manifests/v1").status_code == 401
