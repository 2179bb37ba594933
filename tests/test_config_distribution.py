"""A CNCF Distribution config.yml carries over: what Wharf has is applied, what does not apply
is accepted with one warning line each, what a user relies on and Wharf cannot honour is
refused by name, and what no Distribution has is refused as unknown."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from wharf.config import ConfigError, load_settings
from wharf.wiring import build_storage

from .server import WharfServer
from .test_config import serve

# Written the way Distribution's configuration reference shows one (docs/content/about/
# configuration.md, and cmd/registry/config-dev.yml), with a port and a directory of the test's.
DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  accesslog:
    disabled: true
  level: info
  formatter: json
  fields:
    service: registry
    environment: staging
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  redirect:
    disable: false
  cache:
    blobdescriptor: inmemory
    blobdescriptorsize: 10000
  maintenance:
    uploadpurging:
      enabled: true
      age: 168h
      interval: 24h
      dryrun: false
    readonly:
      enabled: false
  tag:
    concurrencylimit: 8
http:
  addr: 127.0.0.1:{port}
  secret: asecretforlocaldevelopment
  relativeurls: false
  headers:
    X-Content-Type-Options: [nosniff]
    Access-Control-Expose-Headers: [Docker-Content-Digest, Link]
  http2:
    disabled: false
notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: true
      url: https://my.listener.com/event
      timeout: 1s
      threshold: 10
      backoff: 1s
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""

NOT_APPLIED = ["storage.cache", "storage.tag", "http.secret", "health.storagedriver"]


def distribution_config(tmp_path: Path, **extra: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(DISTRIBUTION_CONFIG.format(root=tmp_path / "data", port=5000) + "".join(extra.values()))
    return path


def refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    return str(error.value)


def test_a_distribution_config_is_read_with_one_notice_per_key_not_applied(tmp_path):
    settings = load_settings(distribution_config(tmp_path), environ={})
    assert settings.log.fields == {"service": "registry", "environment": "staging"}
    assert settings.http.headers == {
        "X-Content-Type-Options": ["nosniff"],
        "Access-Control-Expose-Headers": ["Docker-Content-Digest", "Link"],
    }
    assert settings.storage.delete.enabled and not settings.storage.redirect.disable
    assert settings.storage.maintenance.uploadpurging.age == "168h"
    assert [notice.split(" ")[0] for notice in settings.notices] == NOT_APPLIED
    cache = settings.notices[0]
    assert cache.startswith("storage.cache is not applied:") and "no blob descriptor cache" in cache


def test_a_distribution_s3_config_is_applied(tmp_path):
    text = """\
version: 0.1
storage:
  s3:
    accesskey: awsaccesskey
    secretkey: awssecretkey
    region: us-west-1
    regionendpoint: http://myobjects.local
    forcepathstyle: true
    accelerate: false
    bucket: bucketname
    encrypt: false
    keyid: mykeyid
    secure: true
    v4auth: true
    chunksize: 5242880
    rootdirectory: /s3/object/name/prefix
    storageclass: STANDARD
  redirect:
    disable: true
"""
    path = tmp_path / "config.yml"
    path.write_text(text)
    settings = load_settings(path, environ={})
    s3 = settings.storage.s3
    assert s3 is not None
    assert (s3.bucket, s3.region, s3.regionendpoint, s3.forcepathstyle) == (
        "bucketname",
        "us-west-1",
        "http://myobjects.local",
        True,
    )
    assert (s3.accesskey, s3.secretkey, s3.rootdirectory) == (
        "awsaccesskey",
        "awssecretkey",
        "/s3/object/name/prefix",
    )
    assert [notice.split(" ")[0] for notice in settings.notices] == ["storage.s3.chunksize"]
    store = build_storage(settings)
    assert store.client.meta.endpoint_url == "http://myobjects.local"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "auth:\n  silly:\n    realm: basic-realm\n    service: x\n",
            "auth.silly: Wharf has no 'silly' authentication",
        ),
        (
            "http:\n  tls:\n    letsencrypt:\n      cachefile: /le.json\n      email: a@b\n",
            "http.tls.letsencrypt: Wharf gets no certificates from Let's Encrypt",
        ),
        (
            "notifications:\n  endpoints:\n    - name: alistener\n      url: https://my.listener.com/event\n",
            "notifications: Wharf does not send notifications yet",
        ),
        ("proxy:\n  remoteurl: https://registry-1.docker.io\n", "proxy: Wharf is not a pull-through cache"),
        (
            "middleware:\n  storage:\n    - name: cloudfront\n",
            "middleware: Wharf runs no Distribution middleware",
        ),
        (
            "storage:\n  azure:\n    accountname: a\n",
            "storage.azure: Wharf keeps blobs on the filesystem or S3",
        ),
        ("storage:\n  inmemory:\n", "storage.inmemory: Wharf keeps blobs on the filesystem or S3"),
        (
            "storage:\n  s3: {bucket: b, encrypt: true}\n",
            "storage.s3.encrypt: Wharf does not ask S3 to encrypt",
        ),
        ("storage:\n  s3: {bucket: b, usefipsendpoint: true}\n", "storage.s3.usefipsendpoint"),
        ("http:\n  prefix: /my/nested/registry/\n", "http.prefix: Wharf serves /v2 at the root"),
        ("http:\n  net: unix\n", "http.net: Wharf listens on TCP only"),
        (
            "validation:\n  manifests:\n    urls:\n      allow: ['^https?://example.com/']\n",
            "validation.manifests.urls: Wharf does not check the URLs of foreign layers",
        ),
        ("policy:\n  repository:\n    classes: [image]\n", "policy: Wharf does not restrict"),
    ],
)
def test_what_wharf_cannot_honour_is_refused_by_name(tmp_path, text, said):
    assert said in refusal(tmp_path, text)


def test_refusals_and_unknown_keys_are_told_together(tmp_path):
    message = refusal(tmp_path, "auth: {silly: {realm: r}}\nhttp: {secrett: x, tls: {key: /k}}\n")
    assert "  auth.silly: Wharf has no 'silly' authentication" in message
    assert "  http.tls.certificate is required" in message
    assert "  http.secrett is not a known setting (did you mean http.secret?)" in message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("http:\n  secrett: x\n", "http.secrett"),
        ("storage:\n  cach: {blobdescriptor: inmemory}\n", "storage.cach"),
        ("health:\n  storagedriverr: {enabled: true}\n", "health.storagedriverr"),
        ("validation:\n  manifests:\n    indices: {platforms: all}\n", "validation.manifests.indices"),
        ("logg:\n  level: info\n", "logg"),
        ("storage:\n  s3: {bucket: b, sessiontokn: t}\n", "storage.s3.sessiontokn"),
    ],
)
def test_keys_no_distribution_has_are_refused_by_name(tmp_path, named, text):
    assert f"{named} is not a known setting" in refusal(tmp_path, text)


@pytest.mark.parametrize(
    "text",
    [
        "notifications:\n  endpoints:\n    - name: a\n      disabled: true\n      url: https://x/event\n",
        "storage:\n  s3: {bucket: b, encrypt: false, secure: true, v4auth: true, objectacl: private}\n",
        "health:\n  storagedriver: {enabled: false}\n",
        "http:\n  tls: {}\n  http2: {disabled: true}\n  h2c: {enabled: false}\n  relativeurls: true\n",
        "auth:\nproxy: {}\nvalidation: {disabled: true, manifests: {urls: {allow: ['^https://x/']}}}\n",
        "log:\n  accesslog: {disabled: true}\n  hooks: [{type: mail, disabled: true}]\n",
    ],
)
def test_settings_that_change_nothing_pass_silently(tmp_path, text):
    path = tmp_path / "config.yml"
    path.write_text(text)
    assert load_settings(path, environ={}).notices == ()


def test_distribution_spellings_are_read(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("version: 0.1\nloglevel: DEBUG\nlog: {formatter: logstash}\nstorage: filesystem\n")
    settings = load_settings(
        path, environ={"REGISTRY_HTTP_SECRET": "s", "REGISTRY_URL": "not Distribution's"}
    )
    assert (settings.log.level, settings.log.formatter) == ("debug", "json")
    assert settings.storage.filesystem.rootdirectory == "./data"
    assert settings.notices == (
        "log.formatter: logstash is written as json: Wharf has no logstash formatter",
        "REGISTRY_HTTP_SECRET is not applied: it is Distribution's variable; Wharf reads WHARF_HTTP_SECRET",
    )


def test_a_key_set_from_the_environment_is_warned_of_by_its_variable():
    settings = load_settings(
        None, environ={"WHARF_HTTP_SECRET": "s", "WHARF_STORAGE_CACHE_BLOBDESCRIPTOR": "redis"}
    )
    assert [notice.split(" ")[0] for notice in settings.notices] == [
        "WHARF_STORAGE_CACHE_BLOBDESCRIPTOR",
        "WHARF_HTTP_SECRET",
    ]
    with pytest.raises(ConfigError, match="WHARF_AUTH_SILLY_REALM: Wharf has no 'silly' authentication"):
        load_settings(None, environ={"WHARF_AUTH_SILLY_REALM": "r"})


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ("{'Bad Name': [x]}", "'Bad Name' is not a header name"),
        ('{X-Thing: ["a\\r\\nb"]}', "is not a header value"),
        ("{X-Thing: [{a: b}]}", "is not a header value"),
    ],
)
def test_bad_headers_are_refused_naming_http_headers(tmp_path, headers, said):
    message = refusal(tmp_path, f"http:\n  headers: {headers}\n")
    assert "http.headers:" in message and said in message


# -- against a real server ----------------------------------------------------------------


def run_a_job(server: WharfServer) -> str:
    """A dry-run GC job, run by a worker process of the server: its log lines come from there."""
    with server.client() as client:
        job = client.post("/api/v0/admin/jobs", json={"job": "registryGC", "parameters": {"dryRun": True}})
        assert job.status_code == 202, job.text
        job_id: str = job.json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/api/v0/jobs/{job_id}").json()["status"] != "done":
            assert time.monotonic() < deadline, "the job did not end"
            time.sleep(0.1)
    return job_id


def test_a_distribution_config_starts_wharf_and_applies_fields_and_headers(tmp_path):
    server = WharfServer(tmp_path)
    server.config_text = DISTRIBUTION_CONFIG.format(root=server.root, port=server.port)
    server.start()
    try:
        with server.client() as client:
            answers = [
                client.get("/v2/"),
                client.head("/v2/"),
                client.get("/v2/library/absent/manifests/latest"),
                client.get("/api/v0/jobs"),
                client.get("/healthz"),
                client.get("/no/such/path"),
            ]
            for answer in answers:
                assert answer.headers.get("X-Content-Type-Options") == "nosniff", answer.request.url
                exposed = answer.headers.get_list("Access-Control-Expose-Headers")
                assert exposed == ["Docker-Content-Digest", "Link"], answer.request.url
            # The response's own headers stay its own.
            assert answers[0].headers["Content-Type"] == "application/json"
            assert answers[2].status_code == 404
        job_id = run_a_job(server)
    finally:
        server.stop()

    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    # log.fields on every line: the server process's, and its worker's (the job's lines).
    assert all((e.get("service"), e.get("environment")) == ("registry", "staging") for e in entries), entries
    assert any(e.get("job_id") == job_id for e in entries)
    assert any(e["message"].startswith("wharf: serving on") for e in entries)
    for key in NOT_APPLIED:
        warned = [e for e in entries if e["message"].startswith(f"{key} is not applied:")]
        assert [(e["level"], e["logger"]) for e in warned] == [("warning", "wharf.config")], (key, entries)
    assert not [e for e in entries if e["level"] == "warning" and e["logger"] != "wharf.config"]


RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):(wharf[\w.]*):(.*)$")


def test_text_lines_carry_log_fields_and_each_notice_comes_once(make_server):
    server = make_server(
        {
            "log": {"level": "info", "fields": {"service": "registry", "site": "two words"}},
            "http": {"workers": 2},
            "storage": {"cache": {"blobdescriptor": "inmemory"}},
        }
    )
    job_id = run_a_job(server)
    server.stop()
    records = [RECORD.match(line) for line in server.log_path.read_text().splitlines()]
    wharf_lines = [match.group(0) for match in records if match]
    assert any(job_id in line and line.startswith("INFO:wharf.jobs:") for line in wharf_lines), wharf_lines
    assert all(line.endswith(' service=registry site="two words"') for line in wharf_lines), wharf_lines
    cache = [line for line in wharf_lines if "storage.cache is not applied" in line]
    assert len(cache) == 1, wharf_lines  # the main process says it; neither worker does


def test_serve_refuses_auth_without_starting(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(
        DISTRIBUTION_CONFIG.format(root=tmp_path / "data", port=5000)
        + "auth:\n  silly:\n    realm: basic-realm\n    service: x\n"
    )
    result = serve(path)
    assert result.returncode != 0
    assert "auth.silly: Wharf has no 'silly' authentication" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_a_distribution_config_with_htpasswd_carries_over(tmp_path):
    from .test_htpasswd import basic, entry, write_htpasswd

    # As Distribution's configuration reference writes it, with a file `htpasswd -B` would make.
    htpasswd = write_htpasswd(tmp_path / "htpasswd", entry("admin", "s3cret-pass"))
    server = WharfServer(tmp_path)
    server.config_text = DISTRIBUTION_CONFIG.format(root=server.root, port=server.port) + (
        f"auth:\n  htpasswd:\n    realm: basic-realm\n    path: {htpasswd}\n"
    )
    server.start()
    try:
        with server.client() as client:
            refused = client.get("/v2/")
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"] == 'Basic realm="basic-realm"'
            assert client.get("/v2/", headers=basic("admin", "s3cret-pass")).status_code == 200
            assert client.get("/api/v0/jobs", headers=basic("admin", "s3cret-pass")).status_code == 200
    finally:
        server.stop()
    settings = load_settings(server.config_path, environ={})
    assert settings.auth.method == "htpasswd"
    assert not [notice for notice in settings.notices if notice.startswith("auth")]  # applied, as written


def test_http2_over_tls_is_warned_of_as_wharf_serves_http1_only(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("http:\n  tls: {certificate: /c.pem, key: /k.pem}\n  http2: {disabled: false}\n")
    notices = load_settings(path, environ={}).notices
    assert [notice.split(" ")[0] for notice in notices] == ["http.http2"]
    assert "HTTP/1.1 only" in notices[0]
