"""Crafted input never gets a 5xx: each request below goes through real HTTP to `wharf serve`
on both stacks and must be refused with the spec's status and error code (OCI codes on /v2,
the admin API's JSON error on /api/v0), or answered as the spec says.

Python refuses to parse integers of more than 4,300 digits, json.loads recurses, PostgreSQL
cannot hold a NUL in text nor take more than 32,767 parameters a statement: each of these
was a 500 before."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest

from .oci import OCI_INDEX, OCI_MANIFEST, Image, canonical, error_codes, push_blob, push_image

HUGE = "9" * 5000  # past Python's 4,300-digit limit for int()
OVER_INT64 = str(2**63)


def _fake_digest(i: int) -> str:
    return "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()


def _manifest(**changes: Any) -> bytes:
    image = Image.random(layers=1, size=16)
    document = json.loads(image.manifest)
    document.update(changes)
    return canonical(document)


def _put(client: httpx.Client, repo: str, reference: str, payload: bytes, **kwargs: Any) -> httpx.Response:
    headers = {"Content-Type": OCI_MANIFEST, **kwargs.pop("headers", {})}
    return client.put(f"/v2/{repo}/manifests/{reference}", content=payload, headers=headers, **kwargs)


def _refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:500]
    assert code in error_codes(response), response.text[:500]


# -- item 12: a reference that is neither a tag nor a digest ----------------------------------


@pytest.mark.parametrize("reference", [".INVALID_MANIFEST_NAME", "sha256:not-hex", "a" * 129, "v7%0A"])
def test_get_or_head_of_an_invalid_reference_is_manifest_unknown(client, repo, reference):
    push_image(client, repo, Image.random(layers=1, size=16), tag="v1")
    _refused(client.get(f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    assert client.head(f"/v2/{repo}/manifests/{reference}").status_code == 404


def test_put_with_an_invalid_tag_is_still_tag_invalid(client, repo):
    image = Image.random(layers=1, size=16)
    push_image(client, repo, image)
    _refused(_put(client, repo, ".INVALID_MANIFEST_NAME", image.manifest), 400, "TAG_INVALID")


# -- control characters in paths ---------------------------------------------------------------


@pytest.mark.parametrize("char", ["%09", "%0A", "%0D", "%00"])
def test_a_control_character_in_a_tag_is_refused_not_stripped(client, repo, char):
    image = Image.random(layers=1, size=16)
    push_image(client, repo, image)
    _refused(_put(client, repo, f"v7{char}", image.manifest), 400, "TAG_INVALID")
    assert client.get(f"/v2/{repo}/manifests/v7").status_code == 404  # no tag v7 was made
    assert "v7" not in client.get(f"/v2/{repo}/tags/list").json()["tags"]


@pytest.mark.parametrize("char", ["%09", "%0A", "%0D", "%00"])
def test_a_control_character_in_a_name_is_refused(client, repo, char):
    push_image(client, repo, Image.random(layers=1, size=16), tag="v1")
    _refused(client.get(f"/v2/{repo}{char}/tags/list"), 400, "NAME_INVALID")
    _refused(client.post(f"/v2/{repo}{char}/blobs/uploads/"), 400, "NAME_INVALID")


# -- integers past the parser's limit, or past int64 -----------------------------------------


@pytest.mark.parametrize("n", [HUGE, OVER_INT64])
def test_a_huge_n_is_pagination_number_invalid(client, repo, n):
    push_image(client, repo, Image.random(layers=1, size=16), tag="v1")
    _refused(client.get(f"/v2/{repo}/tags/list", params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")
    _refused(client.get("/v2/_catalog", params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")
    # The largest int64 is a number like any other: at most one page of tags.
    assert client.get(f"/v2/{repo}/tags/list", params={"n": str(2**63 - 1)}).json()["tags"] == ["v1"]


def test_huge_numbers_in_range_are_read_as_numbers(client, repo):
    data = b"0123456789"
    digest = push_blob(client, repo, data)
    url = f"/v2/{repo}/blobs/{digest}"
    # A start past the end is unsatisfiable (416); an end or a suffix past it means "to the end".
    _refused(client.get(url, headers={"Range": f"bytes={HUGE}-"}), 416, "RANGE_INVALID")
    _refused(client.get(url, headers={"Range": f"bytes={HUGE}-{HUGE}"}), 416, "RANGE_INVALID")
    whole = client.get(url, headers={"Range": f"bytes=2-{HUGE}"})
    assert (whole.status_code, whole.content) == (206, data[2:])
    suffix = client.get(url, headers={"Range": f"bytes=-{HUGE}"})
    assert (suffix.status_code, suffix.content) == (206, data)


@pytest.mark.parametrize("content_range", [f"0-{HUGE}", f"{HUGE}-{HUGE}", f"0-{OVER_INT64}"])
def test_a_huge_content_range_is_range_invalid(client, repo, content_range):
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["Location"]
    response = client.patch(location, content=b"abc", headers={"Content-Range": content_range})
    _refused(response, 416, "RANGE_INVALID")
    # The session is still there, at offset 0: the client can go on.
    assert client.get(location).headers["Range"] == "0-0"


@pytest.mark.parametrize("size", [HUGE, OVER_INT64, "-1", "1e3", "Infinity"])
def test_a_descriptor_size_past_int64_is_manifest_invalid(client, repo, size):
    image = Image.random(layers=1, size=16)
    for blob in image.blobs:
        push_blob(client, repo, blob)
    text = image.manifest.decode()
    layer_size = f'"size":{len(image.layers[0])}'
    assert layer_size in text
    payload = text.replace(layer_size, f'"size":{size}').encode()
    _refused(_put(client, repo, "v1", payload), 400, "MANIFEST_INVALID")


# -- JSON that is not a manifest's ----------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"schemaVersion":2,"annotations":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001,
    ],
    ids=["array", "object"],
)
def test_deeply_nested_json_is_manifest_invalid(client, repo, payload):
    _refused(_put(client, repo, "v1", payload), 400, "MANIFEST_INVALID")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])
def test_a_manifest_not_in_utf8_is_manifest_invalid(client, repo, encoding):
    image = Image.random(layers=1, size=16)
    for blob in image.blobs:
        push_blob(client, repo, blob)
    payload = image.manifest.decode().encode(encoding)
    _refused(_put(client, repo, "v1", payload), 400, "MANIFEST_INVALID")


@pytest.mark.parametrize(
    "artifact_type",
    ["application/x\u0000nul", "application/" + "x" * 300, "\ud800/x", "text"],
    ids=["nul", "long", "surrogate", "no-subtype"],
)
def test_an_artifact_type_that_is_no_media_type_is_manifest_invalid(client, repo, artifact_type):
    image = Image.random(layers=1, size=16)
    for blob in image.blobs:
        push_blob(client, repo, blob)
    document = json.loads(image.manifest)
    document["artifactType"] = artifact_type
    payload = json.dumps(document).encode()  # \u escapes: valid UTF-8 JSON
    _refused(_put(client, repo, "v1", payload), 400, "MANIFEST_INVALID")


def test_a_referrer_whose_config_media_type_has_a_nul_is_manifest_invalid(client, repo):
    subject = Image.random(layers=1, size=16)
    push_image(client, repo, subject)
    referrer = Image.random(layers=1, size=16)
    for blob in referrer.blobs:
        push_blob(client, repo, blob)
    document = json.loads(referrer.manifest)
    document["config"]["mediaType"] = "application/x\u0000"
    document["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": len(subject.manifest)}
    _refused(_put(client, repo, "v1", json.dumps(document).encode()), 400, "MANIFEST_INVALID")


# -- NUL and other non-text in query parameters ------------------------------------------------


def test_a_nul_in_last_is_refused(client, repo):
    push_image(client, repo, Image.random(layers=1, size=16), tag="v1")
    _refused(client.get(f"/v2/{repo}/tags/list", params={"last": "v\x00"}), 400, "TAG_INVALID")
    _refused(client.get("/v2/_catalog", params={"last": "a\x00"}), 400, "NAME_INVALID")
    # What a previous page ended with still works.
    assert client.get(f"/v2/{repo}/tags/list", params={"last": "v0"}).json()["tags"] == ["v1"]


@pytest.mark.parametrize("artifact_type", ["a\x00/b", "x" * 300])
def test_an_artifact_type_filter_no_manifest_can_have_matches_nothing(client, repo, artifact_type):
    subject = Image.random(layers=1, size=16)
    push_image(client, repo, subject)
    response = client.get(f"/v2/{repo}/referrers/{subject.digest}", params={"artifactType": artifact_type})
    assert response.status_code == 200, response.text
    assert response.json()["manifests"] == []


# -- more references than a statement takes parameters -------------------------------------


def test_a_manifest_with_16384_layers_is_checked_in_batches(client, repo):
    image = Image.random(layers=1, size=16)
    push_image(client, repo, image)
    document = json.loads(image.manifest)
    layer = document["layers"][0]
    document["layers"] += [{**layer, "digest": _fake_digest(i)} for i in range(16_384)]
    payload = canonical(document)
    assert len(payload) < 4 * 1024 * 1024
    response = _put(client, repo, "many", payload)
    _refused(response, 404, "MANIFEST_BLOB_UNKNOWN")
    assert response.json()["errors"][0]["detail"]["digest"] == _fake_digest(0)


def test_an_index_with_33000_children_is_checked_in_batches(client, repo):
    child = Image.random(layers=1, size=16)
    push_image(client, repo, child)
    # Descriptors without their (optional here) mediaType, so that 33,000 fit in 4 MiB.
    known = {"digest": child.digest, "size": len(child.manifest)}
    children = [known] + [{**known, "digest": _fake_digest(i)} for i in range(33_000)]
    payload = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    assert len(payload) < 4 * 1024 * 1024
    response = _put(client, repo, "many", payload, headers={"Content-Type": OCI_INDEX})
    _refused(response, 404, "MANIFEST_BLOB_UNKNOWN")
    assert response.json()["errors"][0]["detail"]["digest"] == _fake_digest(0)


# -- the admin API -------------------------------------------------------------------------


def _admin_refused(response: httpx.Response, status: int = 400) -> list[str]:
    """An /api/v0 refusal: the status and the registry's JSON error body, never text."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json"), response.text[:500]
    return error_codes(response)


def _post_job(client: httpx.Client, raw: str) -> httpx.Response:
    return client.post("/api/v0/admin/jobs", content=raw, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e308", HUGE, "1e400", "1" + "0" * 30])
@pytest.mark.parametrize("field", ["graceSeconds", "durationMinutes", "batchSize"])
def test_numbers_no_job_can_use_are_refused(admin_client, field, value):
    # Each one was accepted, then failed all three attempts of the job (OverflowError).
    response = _post_job(admin_client, f'{{"job": "registryGC", "parameters": {{"{field}": {value}}}}}')
    assert _admin_refused(response) in (["INVALID_JOB"], ["INVALID_JSON"])


@pytest.mark.parametrize("value", ["Infinity", "NaN", "1e308", HUGE])
def test_settings_validation_would_refuse_are_not_saved(admin_client, value):
    before = admin_client.get("/api/v0/admin/settings/registry/garbageCollection").json()
    response = admin_client.put(
        "/api/v0/admin/settings/registry/garbageCollection",
        content=f'{{"duration": "minutes", "minutes": {value}}}',
        headers={"Content-Type": "application/json"},
    )
    assert _admin_refused(response) == ["INVALID_JSON"]
    assert admin_client.get("/api/v0/admin/settings/registry/garbageCollection").json() == before


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"job": "registryGC", "parameters": ' + '{"a":' * 100_000 + "1" + "}" * 100_001,
        '{"job": "registryGC", "parameters": {"a": ' + "[" * 5_000 + "]" * 5_000 + "}}",
    ],
    ids=["array", "object", "parameters"],
)
def test_deeply_nested_admin_bodies_are_refused(admin_client, body):
    assert _admin_refused(_post_job(admin_client, body)) in (["INVALID_JSON"], ["INVALID_JOB"])


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/v0/activities", {"repository": "a\x00"}),
        ("/api/v0/activities", {"actor": "a\x00"}),
        ("/api/v0/activities", {"action": "a\x00"}),
        ("/api/v0/jobs", {"action": "a\x00"}),
        ("/api/v0/jobs", {"worker": "a\x00"}),
        ("/api/v0/activities", {"since": "9999-12-31T23:59:59-23:59"}),
        ("/api/v0/activities", {"until": "0001-01-01T00:00:00+23:59"}),
        ("/api/v0/activities", {"since": HUGE}),
        ("/api/v0/activities", {"start": HUGE}),
        ("/api/v0/admin/settings/registry/garbageCollection/history", {"limit": HUGE}),
    ],
)
def test_admin_query_parameters_no_row_can_match_are_refused(admin_client, path, params):
    assert _admin_refused(admin_client.get(path, params=params)) == ["INVALID_JSON"]


@pytest.mark.parametrize("job_id", ["%00", "a%00b", "x" * 300])
def test_a_job_id_that_no_job_can_have_is_no_such_job(admin_client, job_id):
    for response in (
        admin_client.get(f"/api/v0/jobs/{job_id}"),
        admin_client.get(f"/api/v0/jobs/{job_id}/logs"),
        admin_client.delete(f"/api/v0/jobs/{job_id}"),
    ):
        assert _admin_refused(response, 404) == ["NO_SUCH_JOB"]


@pytest.mark.parametrize(
    "parameters",
    [{"root": "/data\x00"}, {"root": "x" * 5000}],
    ids=["nul", "long"],
)
def test_job_parameters_with_a_nul_are_refused(admin_client, parameters):
    body = json.dumps({"job": "metadatastoremigration", "parameters": parameters})
    assert _admin_refused(_post_job(admin_client, body)) == ["INVALID_JOB"]


def test_a_nul_in_an_admin_path_is_refused(client, repo):
    push_image(client, repo, Image.random(layers=1, size=16), tag="v1")
    response = client.delete(f"/api/v0/repositories/{repo}%00/manifests/v1")
    assert _admin_refused(response) == ["NAME_INVALID"]
    response = client.delete(f"/api/v0/repositories/{repo}/manifests/v1%00")
    assert _admin_refused(response) == ["TAG_INVALID"]


# -- NUL in the upload parameters ------------------------------------------------------------


def test_a_nul_in_mount_or_from_is_refused_by_the_grammar(client, repo):
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": "sha256:\x00", "from": repo})
    _refused(response, 400, "DIGEST_INVALID")
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": _fake_digest(1), "from": "a\x00"})
    _refused(response, 400, "NAME_INVALID")


def test_a_nul_in_a_digest_parameter_is_digest_invalid(client, repo):
    _refused(
        client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": "sha256:\x00"}, content=b"x"),
        400,
        "DIGEST_INVALID",
    )
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    _refused(client.put(location, params={"digest": "sha256:\x00"}, content=b"x"), 400, "DIGEST_INVALID")


# -- a Content-Length past int64 (sent raw: an HTTP client would not lie about the length) ----


def _raw(port: int, head: str) -> tuple[int, bytes]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + b"abc")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("kind", ["monolithic", "patch", "put"])
def test_a_content_length_past_int64_is_size_invalid(server, client, repo, kind):
    path = f"/v2/{repo}/blobs/uploads/?digest={_fake_digest(1)}"
    method = "POST"
    if kind != "monolithic":
        path = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
        method = "PATCH"
        if kind == "put":
            method, path = "PUT", f"{path}?digest={_fake_digest(1)}"
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {OVER_INT64}\r\n\r\n"
    status, body = _raw(server.port, head)
    assert status == 400, body
    assert json.loads(body)["errors"][0]["code"] == "SIZE_INVALID"
