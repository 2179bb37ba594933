"""The command line: serving on the embedded defaults, and schema upgrades."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

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
