from .oci import OCI_INDEX, Image, index, push_image, push_manifest


def test_push_then_pull_image_by_tag(client, repo):
    image = Image.random()
    push_image(client, repo, image, "v1")
    got = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": image.media_type})
    assert got.status_code == 200
    assert got.content == image.manifest
    assert got.headers["docker-content-digest"] == image.digest
    for blob in image.blobs:
        from .oci import sha256

        r = client.get(f"/v2/{repo}/blobs/{sha256(blob)}")
        assert r.status_code == 200 and r.content == blob
    children = [Image.random(), Image.random()]
    for c in children:
        push_image(client, repo, c)
    push_manifest(client, repo, "multi", index(children), OCI_INDEX)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["multi", "v1"]


def test_health_and_readiness(client):
    assert client.get("/healthz").text == "ok"
    ready = client.get("/readyz")
    assert (ready.status_code, ready.text) == (200, "ready")
