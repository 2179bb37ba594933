"""Manifests over /v2: push by tag and digest, pull with negotiation, references, deletes, errors."""

from __future__ import annotations

import json

from .oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    canonical,
    error_codes,
    index,
    push_blob,
    push_image,
    push_manifest,
    sha256,
)


def test_push_by_tag_answers_location_and_digest(client, repo):
    image = Image.random()
    for blob in image.blobs:
        push_blob(client, repo, blob)
    response = push_manifest(client, repo, "v1", image.manifest, OCI_MANIFEST)
    assert response.headers["docker-content-digest"] == image.digest
    assert response.headers["location"] == f"/v2/{repo}/manifests/{image.digest}"
    assert "oci-subject" not in response.headers


def test_get_by_tag_and_digest_and_head(client, repo):
    image = Image.random()
    push_image(client, repo, image, "latest")
    for reference in ("latest", image.digest):
        response = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
        assert response.status_code == 200
        assert response.content == image.manifest
        assert response.headers["content-type"] == OCI_MANIFEST
        assert response.headers["docker-content-digest"] == image.digest
        head = client.head(f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(image.manifest))
        assert head.headers["docker-content-digest"] == image.digest
        assert head.content == b""


def test_push_by_digest_keeps_no_tag(client, repo):
    image = Image.random()
    push_image(client, repo, image)
    assert client.get(f"/v2/{repo}/manifests/{image.digest}").status_code == 200
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == []


def test_push_by_wrong_digest_is_digest_invalid(client, repo):
    image = Image.random()
    for blob in image.blobs:
        push_blob(client, repo, blob)
    wrong = sha256(b"other")
    response = client.put(
        f"/v2/{repo}/manifests/{wrong}", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    assert client.get(f"/v2/{repo}/manifests/{image.digest}").status_code == 404


def test_docker_schema2_manifest_and_list(client, repo):
    children = [Image.random(media_type=DOCKER_MANIFEST) for _ in range(2)]
    for child in children:
        push_image(client, repo, child)
    payload = index(children, DOCKER_LIST)
    push_manifest(client, repo, "multi", payload, DOCKER_LIST)
    response = client.get(
        f"/v2/{repo}/manifests/multi", headers={"Accept": f"{DOCKER_LIST}, {DOCKER_MANIFEST}"}
    )
    assert response.headers["content-type"] == DOCKER_LIST
    assert response.content == payload
    child = client.get(f"/v2/{repo}/manifests/{children[0].digest}", headers={"Accept": DOCKER_MANIFEST})
    assert child.headers["content-type"] == DOCKER_MANIFEST


def test_accept_negotiation(client, repo):
    image = Image.random()
    push_image(client, repo, image, "v1")
    refused = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert refused.status_code == 404
    assert error_codes(refused) == ["MANIFEST_UNKNOWN"]
    assert "Accept" in refused.json()["errors"][0]["message"]
    for accept in (f"{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.5", "*/*", "application/*"):
        assert client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": accept}).status_code == 200, accept
    several = client.get(
        f"/v2/{repo}/manifests/v1", headers=[("Accept", DOCKER_MANIFEST), ("Accept", OCI_MANIFEST)]
    )
    assert several.status_code == 200


def test_manifest_naming_unknown_blob_is_refused(client, repo):
    image = Image.random()
    push_blob(client, repo, image.config)  # layers missing
    response = client.put(
        f"/v2/{repo}/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 404
    assert error_codes(response) == ["MANIFEST_BLOB_UNKNOWN"]
    assert response.json()["errors"][0]["detail"]["digest"] == sha256(image.layers[0])
    assert client.get(f"/v2/{repo}/manifests/v1").status_code == 404


def test_blob_of_another_repository_does_not_count(client, repo):
    image = Image.random()
    for blob in image.blobs:
        push_blob(client, repo + "-other", blob)
    response = client.put(
        f"/v2/{repo}/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert error_codes(response) == ["MANIFEST_BLOB_UNKNOWN"]


def test_index_naming_unknown_child_is_refused(client, repo):
    children = [Image.random(), Image.random()]
    push_image(client, repo, children[0])
    response = client.put(
        f"/v2/{repo}/manifests/multi", content=index(children), headers={"Content-Type": OCI_INDEX}
    )
    assert response.status_code == 404
    assert error_codes(response) == ["MANIFEST_BLOB_UNKNOWN"]
    assert response.json()["errors"][0]["detail"]["digest"] == children[1].digest


def test_malformed_manifests_are_manifest_invalid(client, repo):
    image = Image.random()
    for blob in image.blobs:
        push_blob(client, repo, blob)
    good = json.loads(image.manifest)
    bad_payloads = [
        b"not json",
        b"[]",
        canonical({**good, "schemaVersion": 1}),
        canonical({**good, "layers": "nope"}),
        canonical({**good, "config": {"digest": "sha256:zz", "size": 1}}),
        canonical({**good, "layers": [{"digest": sha256(b"x"), "size": -1}]}),
        canonical({**good, "subject": {"mediaType": OCI_MANIFEST, "digest": "sha256:ab", "size": 1}}),
        canonical({k: v for k, v in good.items() if k != "config"}),
        canonical({**good, "mediaType": "application/x-unknown"}),
    ]
    for payload in bad_payloads:
        response = client.put(
            f"/v2/{repo}/manifests/bad", content=payload, headers={"Content-Type": OCI_MANIFEST}
        )
        assert response.status_code == 400, payload
        assert error_codes(response) == ["MANIFEST_INVALID"], payload
    mismatch = client.put(
        f"/v2/{repo}/manifests/bad", content=image.manifest, headers={"Content-Type": OCI_INDEX}
    )
    assert error_codes(mismatch) == ["MANIFEST_INVALID"]
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == []


def test_manifest_over_4_mib_is_413(client, repo):
    payload = b'{"schemaVersion":2,"pad":"' + b"a" * (4 * 1024 * 1024) + b'"}'
    response = client.put(
        f"/v2/{repo}/manifests/big", content=payload, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 413
    assert error_codes(response) == ["SIZE_INVALID"]


def test_invalid_tag_and_reference(client, repo):
    image = Image.random()
    for reference in (".hidden", "-dash", "a" * 129, "sha256:nothex"):
        response = client.put(
            f"/v2/{repo}/manifests/{reference}",
            content=image.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert response.status_code == 400, reference
        assert error_codes(response)[0] in {"TAG_INVALID", "DIGEST_INVALID"}


def test_unknown_manifest_and_repository(client, repo):
    response = client.get(f"/v2/{repo}/manifests/nope")
    assert response.status_code == 404
    assert error_codes(response) == ["MANIFEST_UNKNOWN"]
    assert client.head(f"/v2/{repo}/manifests/{sha256(b'x')}").status_code == 404


def test_retag_moves_tag(client, repo):
    first, second = Image.random(), Image.random()
    push_image(client, repo, first, "v1")
    push_image(client, repo, second, "v1")
    assert client.get(f"/v2/{repo}/manifests/v1").headers["docker-content-digest"] == second.digest
    assert client.get(f"/v2/{repo}/manifests/{first.digest}").status_code == 200


def test_delete_tag_removes_only_the_tag(client, repo):
    image = Image.random()
    push_image(client, repo, image, "v1")
    push_manifest(client, repo, "v2", image.manifest, OCI_MANIFEST)
    assert client.delete(f"/v2/{repo}/manifests/v1").status_code == 202
    assert client.get(f"/v2/{repo}/manifests/v1").status_code == 404
    assert client.get(f"/v2/{repo}/manifests/v2").status_code == 200
    assert client.get(f"/v2/{repo}/manifests/{image.digest}").status_code == 200
    assert client.delete(f"/v2/{repo}/manifests/v1").status_code == 404


def test_delete_by_digest_removes_image_and_its_tags(client, repo):
    image, other = Image.random(), Image.random()
    push_image(client, repo, image, "v1")
    push_manifest(client, repo, "stable", image.manifest, OCI_MANIFEST)
    push_image(client, repo, other, "v2")
    response = client.delete(f"/v2/{repo}/manifests/{image.digest}")
    assert response.status_code == 202
    for reference in ("v1", "stable", image.digest):
        gone = client.get(f"/v2/{repo}/manifests/{reference}")
        assert gone.status_code == 404
        assert error_codes(gone) == ["MANIFEST_UNKNOWN"]
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v2"]
    assert error_codes(client.delete(f"/v2/{repo}/manifests/{image.digest}")) == ["MANIFEST_UNKNOWN"]


def test_manifest_delete_refused_when_deletes_disabled(make_server):
    server = make_server({"storage": {"delete": {"enabled": False}}})
    with server.client() as client:
        image = Image.random()
        push_image(client, "lib/app", image, "v1")
        for reference in ("v1", image.digest):
            response = client.delete(f"/v2/lib/app/manifests/{reference}")
            assert response.status_code == 405
            assert error_codes(response) == ["UNSUPPORTED"]
        assert client.get("/v2/lib/app/manifests/v1").status_code == 200


def test_push_with_subject_answers_oci_subject(client, repo):
    image = Image.random()
    push_image(client, repo, image, "v1")
    subject = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)}
    signature = Image.random(layers=1, subject=subject, artifact_type="application/vnd.example.sig")
    for blob in signature.blobs:
        push_blob(client, repo, blob)
    response = push_manifest(client, repo, signature.digest, signature.manifest, OCI_MANIFEST)
    assert response.headers["oci-subject"] == image.digest
