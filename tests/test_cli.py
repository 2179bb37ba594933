"""The command line: serving on the embedded defaults, and schema upgrades."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from wharf.meta import migrate

from .oci import push_blob
from .server import free_port


def test_serve_without_config_keeps_everything_in_data(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    # Only the port moves (5000 may be taken here); everything else is the embedded default.
    env["WHARF_HTTP_ADDR"] = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "wharf", "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "wharf serve did not come up"
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                time.sleep(0.1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            digest = push_blob(client, "library/app", b"hello")
        hex_ = digest.split(":")[1]
        stored = tmp_path / "data/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"
        assert stored.read_bytes() == b"hello"
        assert (tmp_path / "data/wharf.db").is_file()
    finally:
        process.terminate()
        process.communicate(timeout=15)


def test_db_upgrade_brings_schema_to_head(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text(f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "wharf", "db", "upgrade", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"-> {migrate.head_revision()}" in result.stdout
    url = f"sqlite:///{tmp_path / 'data' / 'wharf.db'}"
    assert migrate.current_revision(url) == migrate.head_revision()


def test_check_current_refuses_a_database_behind(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    try:
        migrate.check_current(url)
    except migrate.SchemaBehind as exc:
        assert "wharf db upgrade" in str(exc)
    else:
        raise AssertionError("an empty database was accepted")


def test_serve_on_uvicorn_speaks_the_same_api(make_server):
    server = make_server(server="uvicorn")
    with server.client() as client:
        digest = push_blob(client, "lib/app", b"on uvicorn")
        response = client.get(f"/v2/lib/app/blobs/{digest}")
        assert response.content == b"on uvicorn"
        assert response.headers["docker-distribution-api-version"] == "registry/2.0"
        ranged = client.get(f"/v2/lib/app/blobs/{digest}", headers={"Range": "bytes=3-"})
        assert ranged.status_code == 206 and ranged.content == b"uvicorn"


def test_serve_refuses_a_postgresql_database_whose_schema_is_behind(tmp_path, postgres_server):
    from .postgres import create_database, drop_database

    url = create_database(postgres_server)
    try:
        config = tmp_path / "config.yml"
        config.write_text(
            f"database: {{url: '{url}'}}\nstorage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
            f"http: {{addr: '127.0.0.1:{free_port()}'}}\n"  # never 5000: it may be taken here
        )
        result = subprocess.run(
            [sys.executable, "-m", "wharf", "serve", str(config)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0
        assert "wharf db upgrade" in result.stderr
        upgraded = subprocess.run(
            [sys.executable, "-m", "wharf", "db", "upgrade", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert upgraded.returncode == 0, upgraded.stderr
        assert migrate.current_revision(url) == migrate.head_revision()
    finally:
        drop_database(postgres_server, url)


def _wharf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_") or k.startswith("WHARF_TEST_")}
    return subprocess.run(
        [sys.executable, "-m", "wharf", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("command", [["garbage-collect"], ["garbage-collect", "--dry-run"], ["fsck"]])
def test_maintenance_commands_refuse_to_invent_a_registry(tmp_path, command):
    # No CONFIG, in a directory with no ./data: nothing to work on.
    result = _wharf(*command, cwd=tmp_path)
    assert result.returncode != 0
    assert f"no registry at {tmp_path / 'data'}" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created
    # A storage root without its database (here an unadopted Distribution directory).
    (tmp_path / "data/docker/registry/v2").mkdir(parents=True)
    result = _wharf(*command, cwd=tmp_path)
    assert result.returncode != 0
    assert f"no registry database at {tmp_path / 'data/wharf.db'}" in result.stderr
    assert "wharf import-distribution" in result.stderr
    assert not (tmp_path / "data/wharf.db").exists()


def test_a_configured_registry_that_is_not_there_is_named(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text(f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'gone'}}}}}\n")
    result = _wharf("garbage-collect", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert f"no registry at {tmp_path / 'gone'}" in result.stderr and str(config) in result.stderr
    assert not (tmp_path / "gone").exists()


def test_maintenance_commands_refuse_an_empty_postgresql_database(tmp_path, postgres_server):
    from .postgres import create_database, drop_database

    url = create_database(postgres_server)
    try:
        config = tmp_path / "config.yml"
        config.write_text(
            f"database: {{url: '{url}'}}\nstorage: {{filesystem: {{rootdirectory: {tmp_path}}}}}\n"
        )
        for command in ("garbage-collect", "fsck"):
            result = _wharf(command, str(config), cwd=tmp_path)
            assert result.returncode != 0
            assert "no registry in the database postgresql://" in result.stderr
        assert migrate.current_revision(url) is None  # no tables were created
    finally:
        drop_database(postgres_server, url)


def test_a_registry_that_exists_is_collected(make_server):
    server = make_server()
    result = _wharf("garbage-collect", "--dry-run", str(server.config_path), cwd=server.directory)
    assert result.returncode == 0, result.stderr
    assert "dry run: would delete 0 manifests and 0 blobs" in result.stdout


def test_import_distribution_refuses_a_directory_that_is_not_distributions(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _wharf("import-distribution", str(empty), cwd=tmp_path)
    assert result.returncode != 0
    assert f"{empty} is not a Distribution data directory" in result.stderr
    assert list(empty.iterdir()) == []  # no wharf.db left behind in it
    missing = _wharf("import-distribution", str(tmp_path / "absent"), cwd=tmp_path)
    assert missing.returncode != 0 and "absent" in missing.stderr and "does not exist" in missing.stderr


def test_import_distribution_creates_wharfs_database_for_a_new_registry(tmp_path):
    root = tmp_path / "distribution"
    (root / "docker/registry/v2/repositories").mkdir(parents=True)
    result = _wharf("import-distribution", str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "imported 0 repositories" in result.stdout
    assert (root / "wharf.db").is_file()


@pytest.mark.parametrize("command", ["garbage-collect", "fsck", "import-distribution"])
def test_help_says_where_they_look_without_a_config(command, tmp_path):
    result = _wharf(command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    if command == "import-distribution":
        assert "SQLite in ROOTDIR/wharf.db" in text and "docker/registry/v2" in text
    else:
        assert "./data/wharf.db" in text and "under ./data" in text and "creates none" in text
