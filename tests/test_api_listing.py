"""Content discovery over /v2: the version check, tags list, catalog and referrers."""

from __future__ import annotations

from .oci import OCI_INDEX, OCI_MANIFEST, Image, error_codes, push_blob, push_image, push_manifest


def test_version_check(client):
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


def test_tags_list_paginates_in_lexical_order(client, repo):
    image = Image.random()
    push_image(client, repo, image, "a")
    names = ["b", "C", "a1", "v1.0", "v10", "v2", "_x"]
    for name in names:
        push_manifest(client, repo, name, image.manifest, OCI_MANIFEST)
    expected = sorted(["a", *names])
    assert client.get(f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": expected}

    seen: list[str] = []
    url = f"/v2/{repo}/tags/list?n=3"
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        body = response.json()
        assert len(body["tags"]) <= 3
        seen += body["tags"]
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else ""
        if link:
            assert link.endswith('rel="next"')
        pages += 1
    assert seen == expected
    assert pages == 3

    after = client.get(f"/v2/{repo}/tags/list", params={"last": "a1"}).json()["tags"]
    assert after == expected[expected.index("a1") + 1 :]
    assert client.get(f"/v2/{repo}/tags/list", params={"n": 0}).json()["tags"] == []


def test_tags_list_errors(client, repo):
    unknown = client.get(f"/v2/{repo}/tags/list")
    assert unknown.status_code == 404
    assert error_codes(unknown) == ["NAME_UNKNOWN"]
    push_image(client, repo, Image.random(), "v1")
    for n in ("-1", "x", "1.5", "\u00b2"):
        response = client.get(f"/v2/{repo}/tags/list", params={"n": n})
        assert response.status_code == 400, n
        assert error_codes(response) == ["PAGINATION_NUMBER_INVALID"]
    invalid = client.get("/v2/Bad_Name/tags/list")
    assert invalid.status_code == 400
    assert error_codes(invalid) == ["NAME_INVALID"]


def test_catalog_paginates(make_server):
    server = make_server()
    with server.client() as client:
        names = ["zeta/app", "alpha", "alpha/one", "beta", "mid/x/y"]
        image = Image.random(layers=1, size=16)
        for name in names:
            push_image(client, name, image, "v1")
        push_blob(client, "blobs/only", b"blob")  # no image yet: not a repository to list
        assert client.get("/v2/_catalog").json() == {"repositories": sorted(names)}
        first = client.get("/v2/_catalog", params={"n": 2})
        assert first.json()["repositories"] == ["alpha", "alpha/one"]
        assert first.headers["link"] == '</v2/_catalog?n=2&last=alpha%2Fone>; rel="next"'
        rest = client.get("/v2/_catalog", params={"n": 10, "last": "alpha/one"})
        assert rest.json()["repositories"] == ["beta", "mid/x/y", "zeta/app"]
        assert "link" not in rest.headers


def test_referrers_lists_and_filters(client, repo):
    image = Image.random()
    push_image(client, repo, image, "v1")
    subject = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)}
    signature = Image.random(
        layers=1,
        subject=subject,
        artifact_type="application/vnd.example.sig",
        annotations={"org.example.signed-by": "ci"},
    )
    sbom = Image.random(layers=1, subject=subject, artifact_type="application/spdx+json")
    for artifact in (signature, sbom):
        push_image(client, repo, artifact)
    unrelated = Image.random()
    push_image(client, repo, unrelated, "other")

    response = client.get(f"/v2/{repo}/referrers/{image.digest}")
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    body = response.json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in body["manifests"]}
    assert set(by_digest) == {signature.digest, sbom.digest}
    assert by_digest[signature.digest]["artifactType"] == "application/vnd.example.sig"
    assert by_digest[signature.digest]["annotations"] == {"org.example.signed-by": "ci"}
    assert by_digest[sbom.digest]["size"] == len(sbom.manifest)
    assert "oci-filters-applied" not in response.headers

    filtered = client.get(
        f"/v2/{repo}/referrers/{image.digest}", params={"artifactType": "application/spdx+json"}
    )
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    assert [d["digest"] for d in filtered.json()["manifests"]] == [sbom.digest]

    none = client.get(f"/v2/{repo}/referrers/{unrelated.digest}")
    assert none.status_code == 200 and none.json()["manifests"] == []
    bad = client.get(f"/v2/{repo}/referrers/sha256:nope")
    assert bad.status_code == 400
    assert error_codes(bad) == ["DIGEST_INVALID"]


def test_referrer_pushed_before_its_subject_is_listed(client, repo):
    image = Image.random()
    subject = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)}
    signature = Image.random(layers=1, subject=subject, artifact_type="application/vnd.example.sig")
    push_image(client, repo, signature)
    listed = client.get(f"/v2/{repo}/referrers/{image.digest}").json()["manifests"]
    assert [d["digest"] for d in listed] == [signature.digest]


def test_unknown_paths_and_methods(client, repo):
    response = client.get("/v2/nothing-here")
    assert response.status_code == 404
    wrong_method = client.post(f"/v2/{repo}/manifests/v1")
    assert wrong_method.status_code == 405
    assert error_codes(wrong_method) == ["UNSUPPORTED"]
    assert "PUT" in wrong_method.headers["allow"]
