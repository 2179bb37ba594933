"""Configuration: YAML with Distribution's key names, environment overrides, clear refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    assert settings.http.port == 5050 and settings.http.bind_host == "0.0.0.0"
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
        ("", {"WHARF_STORAGE_DELET_ENABLED": "true"}, "WHARF_STORAGE_DELET_ENABLED is not a known setting"),
        ("", {"WHARF_LOG_LEVEL": "loud"}, "WHARF_LOG_LEVEL: Input should be"),
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


# -- errors name what the user wrote ------------------------------------------------------


def refusal(tmp_path, text: str = "", environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text), environ=environ or {})
    return str(error.value)


def test_an_unknown_variable_is_named_as_the_variable(tmp_path):
    message = refusal(tmp_path, environ={"WHARF_HTTP_ADR": "127.0.0.1:5000"})
    assert "WHARF_HTTP_ADR is not a known setting (did you mean WHARF_HTTP_ADDR?)" in message
    assert "http.adr" not in message


def test_a_bad_variable_value_is_named_as_the_variable(tmp_path):
    message = refusal(tmp_path, "http: {addr: '127.0.0.1:5000'}\n", {"WHARF_HTTP_ADDR": "127.0.0.1:99999"})
    assert "WHARF_HTTP_ADDR: port 99999" in message and "out of range" in message
    message = refusal(tmp_path, environ={"WHARF_STORAGE_DELETE_ENABLED": "maybe"})
    assert "WHARF_STORAGE_DELETE_ENABLED: Input should be a valid boolean" in message and "'maybe'" in message


def test_a_variable_yaml_cannot_read_is_taken_as_text():
    # An IPv6 address is a broken YAML list; it used to end in a yaml traceback.
    settings = load_settings(None, environ={"WHARF_HTTP_ADDR": "[::1]:5001"})
    assert (settings.http.bind_host, settings.http.port) == ("::1", 5001)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    text = "version: 0.1\nhttp:\n  addr: 127.0.0.1:5000\n  headers: {X-Frame-Options: [DENY}\n"
    message = refusal(tmp_path, text)
    assert str(tmp_path / "config.yml") in message and "line 4" in message
    assert "<unicode string>" not in message


@pytest.mark.parametrize("addr", ["127.0.0.1:70000", ":0", "[::]:65536"])
def test_a_port_out_of_range_says_so(tmp_path, addr):
    message = refusal(tmp_path, f"http: {{addr: '{addr}'}}\n")
    assert "http.addr: port" in message and "out of range" in message


@pytest.mark.parametrize(
    "host", ["registry.example.com", "ftp://registry.example.com", "https://", "https://r?x=1"]
)
def test_http_host_must_be_the_registrys_url(tmp_path, host):
    message = refusal(tmp_path, f"http: {{host: '{host}'}}\n")
    assert f"http.host: {host!r} is not the registry's URL" in message


@pytest.mark.parametrize("clientauth", ["request-client-cert", "require-any-client-cert"])
def test_client_certificates_are_always_verified(tmp_path, clientauth):
    text = f"http: {{tls: {{certificate: /c, key: /k, clientcas: [/ca], clientauth: {clientauth}}}}}\n"
    message = refusal(tmp_path, text)
    assert f"http.tls.clientauth: {clientauth} takes client certificates without verifying them" in message


def test_two_storage_drivers_name_the_storage_key(tmp_path):
    both = "storage:\n  filesystem: {rootdirectory: /srv}\n  s3: {bucket: b, region: us-east-1}\n"
    message = refusal(tmp_path, both)
    assert "storage: configure one storage driver, not 2 (storage.filesystem, storage.s3)" in message
    one_in_each = "storage: {filesystem: {rootdirectory: /srv}}\n"
    message = refusal(tmp_path, one_in_each, {"WHARF_STORAGE_S3_BUCKET": "b"})
    assert "storage: configure one storage driver" in message and "WHARF_STORAGE_S3_BUCKET" in message


@pytest.mark.parametrize("version", ["0.2", "'1'", "'0.1.0'", "two"])
def test_an_unknown_version_is_refused(tmp_path, version):
    message = refusal(tmp_path, f"version: {version}\n")
    assert "version:" in message and "Wharf's, as Distribution's, is 0.1" in message


@pytest.mark.parametrize("version", ["0.1", "'0.1'", '"0.1"'])
def test_version_0_1_is_read(tmp_path, version):
    assert load_settings(write(tmp_path, f"version: {version}\n"), environ={}).version == "0.1"


def serve(path: Path, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`wharf serve path` in the file's directory, with no WHARF_* setting but ``environ``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")} | (environ or {})
    return subprocess.run(
        [sys.executable, "-m", "wharf", "serve", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=path.parent,
    )


@pytest.mark.parametrize(
    ("text", "environ", "said"),
    [
        ("", {"WHARF_HTTP_ADR": ":5000"}, "WHARF_HTTP_ADR is not a known setting"),
        ("http:\n  addr: ':5000\n", {}, "line 2"),
        ("http: {addr: '127.0.0.1:65536'}\n", {}, "port 65536 in '127.0.0.1:65536' is out of range"),
        ("storage: {filesystem: {}, s3: {bucket: b}}\n", {}, "storage: configure one storage driver"),
        ("version: 0.2\n", {}, "version: '0.2' is not a configuration version"),
    ],
)
def test_serve_names_what_the_user_wrote(tmp_path, text, environ, said):
    result = serve(write(tmp_path, text), environ)
    assert result.returncode != 0
    assert said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        ("", "auth.token needs the token server's keys: set rootcertbundle"),
        (", rootcertbundle: /nonexistent/certs.pem", "auth.token.rootcertbundle (/nonexistent/certs.pem)"),
        (", jwks: /nonexistent/keys.json", "auth.token.jwks (/nonexistent/keys.json): cannot read it"),
    ],
)
def test_an_external_token_server_without_usable_keys_is_refused_at_start_up(tmp_path, keys, said):
    path = write(
        tmp_path,
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        "auth: {token: {realm: https://auth.example.com/token, service: registry, "
        f"issuer: acme{keys}}}}}\n",
    )
    result = subprocess.run(
        [sys.executable, "-m", "wharf", "serve", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
