"""Deleting through the DTR-compatible admin API, and the activity log every change leaves."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from wharf.meta import schema as s

from .gc import engine, run_gc, stored_digests
from .oci import Image, error_codes, push_image, sha256


def activity(server, repository: str) -> list[tuple[str, str, str | None, str | None]]:
    """(actor, action, reference, digest) of the repository's events, oldest first."""
    db = engine(server)
    try:
        with db.connect() as conn:
            rows = conn.execute(
                sa.select(s.events.c.actor, s.events.c.action, s.events.c.reference, s.events.c.digest)
                .where(s.events.c.repository == repository)
                .order_by(s.events.c.id)
            )
            return [tuple(row) for row in rows]
    finally:
        db.dispose()


def test_dtr_delete_by_tag_removes_the_tag_alone(client, repo):
    image = Image.random()
    push_image(client, repo, image, "v1")
    push_image(client, repo, image, "v2")
    response = client.delete(f"/api/v0/repositories/{repo}/manifests/v1")
    assert response.status_code == 204
    assert client.get(f"/v2/{repo}/manifests/v1").status_code == 404
    assert client.get(f"/v2/{repo}/manifests/v2").status_code == 200
    again = client.delete(f"/api/v0/repositories/{repo}/manifests/v1")
    assert again.status_code == 404
    assert error_codes(again) == ["MANIFEST_UNKNOWN"]


def test_dtr_delete_by_digest_removes_the_image_and_its_tags(client, repo):
    image = Image.random()
    push_image(client, repo, image, "v1")
    push_image(client, repo, image, "latest")
    assert client.delete(f"/api/v0/repositories/{repo}/manifests/{image.digest}").status_code == 204
    for reference in ("v1", "latest", image.digest):
        assert client.get(f"/v2/{repo}/manifests/{reference}").status_code == 404
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == []


def test_dtr_delete_of_a_bad_reference_or_name_says_what_was_wrong(client, repo):
    bad = client.delete(f"/api/v0/repositories/{repo}/manifests/sha256:short")
    assert bad.status_code == 400
    assert error_codes(bad) == ["DIGEST_INVALID"]
    upper = client.delete("/api/v0/repositories/Team/App/manifests/v1")
    assert upper.status_code == 400
    assert error_codes(upper) == ["NAME_INVALID"]
    unknown = client.delete(f"/api/v0/repositories/{repo}-nothing/manifests/v1")
    assert unknown.status_code == 404


def test_dtr_delete_repository_takes_everything_and_gc_frees_it(own_server):
    keep, drop = Image.random(), Image.random()
    with own_server.client() as client:
        push_image(client, "team/keep", keep, "v1")
        push_image(client, "team/drop", drop, "v1")
        push_image(client, "team/drop", Image.random(), "v2")
        assert client.delete("/api/v0/repositories/team/drop").status_code == 204
        assert client.get("/v2/team/drop/tags/list").status_code == 404
        assert client.get("/v2/_catalog").json()["repositories"] == ["team/keep"]
        assert client.get(f"/v2/team/drop/blobs/{sha256(drop.config)}").status_code == 404
        # DTR answers 204 for a repository that is not there, and nothing more happens.
        assert client.delete("/api/v0/repositories/team/drop").status_code == 204
        assert client.get("/v2/_catalog").json()["repositories"] == ["team/keep"]

        run_gc(own_server, "--grace", "0s")
        assert stored_digests(own_server) == {sha256(blob) for blob in keep.blobs}
        (event,) = [e for e in activity(own_server, "team/drop") if e[1] == "repository.delete"]
        assert event[0] == "anonymous"


@pytest.mark.parametrize(
    "path", ["/api/v0/repositories/team/app", "/api/v0/repositories/team/app/manifests/v1"]
)
def test_dtr_deletes_are_refused_when_deletion_is_disabled(make_server, path):
    server = make_server({"storage": {"delete": {"enabled": False}}})
    with server.client() as client:
        push_image(client, "team/app", Image.random(), "v1")
        response = client.delete(path)
        assert response.status_code == 405
        assert error_codes(response) == ["UNSUPPORTED"]
        assert client.get("/v2/team/app/manifests/v1").status_code == 200


def test_every_push_tag_move_and_delete_is_in_the_activity_log(own_server):
    first, second = Image.random(layers=1), Image.random(layers=1)
    with own_server.client() as client:
        push_image(client, "lib/log", first, "v1")
        push_image(client, "lib/log", second, "v1")  # moves the tag
        assert client.delete(f"/v2/lib/log/blobs/{sha256(first.layers[0])}").status_code == 202
        assert client.delete("/api/v0/repositories/lib/log/manifests/v1").status_code == 204
        assert client.delete(f"/v2/lib/log/manifests/{first.digest}").status_code == 202
    run_gc(own_server, "--grace", "0s")
    actions = [(action, reference) for _actor, action, reference, _digest in activity(own_server, "lib/log")]
    pushes = [(a, r) for a, r in actions if a == "blob.push"]
    assert len(pushes) == 4
    assert [(a, r) for a, r in actions if a != "blob.push"] == [
        ("manifest.push", "v1"),
        ("tag.move", "v1"),  # recorded in the same transaction as the push that moved it
        ("manifest.push", "v1"),
        ("blob.delete", sha256(first.layers[0])),
        ("tag.delete", "v1"),
        ("manifest.delete", first.digest),
    ]
    assert {actor for actor, *_rest in activity(own_server, "lib/log")} == {"anonymous"}
    db = engine(own_server)
    with db.connect() as conn:
        runs = conn.execute(
            sa.select(s.events.c.actor, s.events.c.detail).where(s.events.c.action == "gc.run")
        ).all()
    db.dispose()
    assert [actor for actor, _detail in runs] == ["garbage-collector"]
    assert runs[0][1]["blobs_deleted"] == 2  # the first image's config and layer (the second stays, untagged)


def test_the_activity_api_filters_by_repository_actor_action_and_time_and_pages(own_server):
    from datetime import UTC, datetime, timedelta

    before = datetime.now(UTC) - timedelta(seconds=1)
    first, second = Image.random(layers=1), Image.random(layers=1)
    with own_server.client() as client:
        push_image(client, "lib/act", first, "v1")
        push_image(client, "lib/act", second, "v1")
        push_image(client, "lib/other", first, "v1")
        assert client.delete("/api/v0/repositories/lib/act/manifests/v1").status_code == 204
        run_gc(own_server, "--grace", "0s")

        def activities(**params):
            response = client.get("/api/v0/activities", params=params)
            assert response.status_code == 200, response.text
            return response.json()["activities"]

        mine = activities(repository="lib/act")
        assert [a["action"] for a in mine if a["action"] != "blob.push"] == [
            "tag.delete",
            "manifest.push",
            "tag.move",
            "manifest.push",
        ]
        assert {a["actor"] for a in mine} == {"anonymous"}
        (gc_run,) = activities(action="gc.run")
        assert gc_run["actor"] == "garbage-collector" and gc_run["detail"]["status"] == "done"
        assert activities(actor="garbage-collector", action="manifest.push") == []
        assert len(activities(since=before.isoformat())) == len(activities(limit=1000))
        assert activities(until=before.isoformat()) == []
        page = activities(repository="lib/act", start=1, limit=2)
        assert [a["id"] for a in page] == [a["id"] for a in mine[1:3]]
        assert client.get("/api/v0/activities", params={"since": "yesterday"}).status_code == 400


def test_dtr_deletes_work_for_a_single_component_name(own_server):
    """DTR's names are namespace/repo; /v2 takes any name, so the admin API does too."""
    first, second = Image.random(), Image.random()
    with own_server.client() as client:
        push_image(client, "solo", first, "v1")
        push_image(client, "solo", second, "v2")
        push_image(client, "team/app", Image.random(), "v1")
        assert client.delete("/api/v0/repositories/solo/manifests/v1").status_code == 204
        assert client.get("/v2/solo/manifests/v1").status_code == 404
        assert client.delete(f"/api/v0/repositories/solo/manifests/{second.digest}").status_code == 204
        assert client.get("/v2/solo/manifests/v2").status_code == 404
        push_image(client, "solo", first, "v1")
        assert client.delete("/api/v0/repositories/solo").status_code == 204
        assert client.get("/v2/solo/tags/list").status_code == 404
        assert client.delete("/api/v0/repositories/solo").status_code == 204  # gone already
        # A name of three components too, and a repository called "manifests".
        push_image(client, "a/b/manifests", first, "v1")
        assert client.delete("/api/v0/repositories/a/b/manifests/manifests/v1").status_code == 204
        assert client.get("/v2/a/b/manifests/tags/list").json()["tags"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/v0/repositories",
        "/api/v0/repositories/",
        "/api/v0/repositories/solo/",
        "/api/v0/repositories/team/app/",
        "/api/v0/repositories/team/app/manifests/",
        "/api/v0/repositories/team/app/manifests/v1/",
    ],
)
def test_dtr_delete_paths_never_redirect_and_say_what_was_wrong(client, path):
    response = client.delete(path)
    assert response.status_code in (400, 404), (response.status_code, response.headers)
    assert "location" not in response.headers
    (problem,) = response.json()["errors"]
    assert problem["code"] in {"NAME_INVALID", "NAME_UNKNOWN", "NOT_FOUND"}, problem
    written = path.removeprefix("/api/v0/repositories").strip("/")
    assert (written and written in problem["message"]) or path in problem["message"], problem


def test_a_repository_emptied_through_the_api_leaves_the_catalog(own_server):
    image = Image.random()
    with own_server.client() as client:
        push_image(client, "team/emptied", image, "v1")
        push_image(client, "team/kept", Image.random(), "v1")
        push_image(client, "team/untagged", Image.random())  # by digest: still an image
        assert client.get("/v2/_catalog").json()["repositories"] == [
            "team/emptied",
            "team/kept",
            "team/untagged",
        ]
        assert client.delete(f"/api/v0/repositories/team/emptied/manifests/{image.digest}").status_code == 204
        assert client.get("/v2/_catalog").json()["repositories"] == ["team/kept", "team/untagged"]
        assert client.get("/v2/team/emptied/tags/list").json()["tags"] == []
        push_image(client, "team/emptied", image, "v1")  # pushed again, it is back
        assert client.get("/v2/_catalog").json()["repositories"] == [
            "team/emptied",
            "team/kept",
            "team/untagged",
        ]
