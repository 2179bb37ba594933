"""Configuration: YAML with Distribution's key names, environment overrides, clear refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wharf.config import ConfigError, load_settings


def write(tmp_path, text: str):
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_defaults_serve_localhost_from_data(tmp_path):
    settings = load_settings(None, environ={})
    assert settings.http.addr == "127.0.0.1:5000"
    assert settings.storage.filesystem.rootdirectory == "./data"
    assert settings.storage.delete.enabled is True
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith("data/wharf.db")


def test_distribution_keys_are_read(tmp_path):
    path = write(
        tmp_path,
        """
version: 0.1
log: {level: debug}
http: {addr: "0.0.0.0:5050"}
storage:
  filesystem: {rootdirectory: /srv/registry}
  delete: {enabled: false}
  maintenance:
    readonly: {enabled: true}
database: {url: "sqlite:////tmp/x.db"}
""",
    )
    settings = load_settings(path, environ={})
    assert settings.http.port == 5050 and settings.http.host == "0.0.0.0"
    assert settings.storage.filesystem.rootdirectory == "/srv/registry"
    assert settings.storage.delete.enabled is False
    assert settings.storage.maintenance.readonly.enabled is True
    assert settings.log.level == "debug"
    assert settings.database_url == "sqlite:////tmp/x.db"


def test_environment_overrides_file(tmp_path):
    path = write(tmp_path, "http: {addr: '127.0.0.1:5000'}\nstorage: {delete: {enabled: true}}\n")
    settings = load_settings(
        path,
        environ={
            "WHARF_HTTP_ADDR": "127.0.0.1:6000",
            "WHARF_STORAGE_DELETE_ENABLED": "false",
            "WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/var/lib/wharf",
            "WHARF_CONFIG": "ignored",
        },
    )
    assert settings.http.port == 6000
    assert settings.storage.delete.enabled is False
    assert settings.storage.filesystem.rootdirectory == "/var/lib/wharf"


@pytest.mark.parametrize(
    ("text", "environ", "named"),
    [
        ("storage: {filesystem: {rootdir: /x}}\n", {}, "storage.filesystem.rootdir"),
        ("htp: {addr: ':5000'}\n", {}, "htp"),
        ("http: {addr: 'nope'}\n", {}, "http.addr"),
        ("storage: {delete: {enabled: maybe}}\n", {}, "storage.delete.enabled"),
        ("", {"WHARF_STORAGE_DELET_ENABLED": "true"}, "storage.delet"),
        ("", {"WHARF_LOG_LEVEL": "loud"}, "log.level"),
        ("- a list\n", {}, "mapping"),
        ("database: {url: 'mysql://x/y'}\n", {}, "database.url"),
        ("http: [unclosed\n", {}, "not valid YAML"),
    ],
)
def test_wrong_keys_are_refused_by_name(tmp_path, text, environ, named):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text), environ=environ)
    assert named in str(error.value)


def test_serve_exits_non_zero_naming_the_key(tmp_path):
    path = write(tmp_path, "storage: {filesystem: {rootdirectory: /tmp/x, bogus: 1}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "wharf", "serve", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "storage.filesystem.bogus" in result.stderr


def test_missing_config_file_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "wharf", "serve", str(tmp_path / "absent.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "absent.yml" in result.stderr
