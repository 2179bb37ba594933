"""DTR's repositories API on a real server with Wharf's accounts on: lists filtered to what
the caller may see, creation in a namespace one administers, details, deletes, and the tags
and manifests of a repository, for each kind of caller."""

from __future__ import annotations

import pytest

from .dtr import ROOT, call, expect, login, organization, refused, users
from .oci import Image, push_image

pytestmark = pytest.mark.parametrize("accounts_server", ["sqlite+filesystem"], indirect=True)

REPOSITORY_KEYS = {"id", "namespace", "name", "shortDescription", "longDescription", "visibility", "status"}


@pytest.fixture
def registry(accounts_server):
    """alice (alice/private, alice/public), acme (owned by olive; devs: bob, read-only on
    acme/app; ops: dan, read-write on it; acme/hidden), carol in nothing."""
    users(accounts_server, "alice", "olive", "bob", "carol", "dan")
    with accounts_server.client() as client:
        organization(client, "acme", owners=("olive",), devs=("bob",), ops=("dan",))
        expect(call(client, "POST", "/repositories/alice", login("alice"), {"name": "private"}), 201)
        expect(
            call(
                client,
                "POST",
                "/repositories/alice",
                login("alice"),
                {"name": "public", "visibility": "public"},
            ),
            201,
        )
        for name in ["app", "hidden"]:
            expect(call(client, "POST", "/repositories/acme", login("olive"), {"name": name}), 201)
        expect(
            call(client, "PUT", "/repositories/acme/app/teamAccess/devs", ROOT, {"accessLevel": "read-only"}),
            200,
        )
        expect(
            call(client, "PUT", "/repositories/acme/app/teamAccess/ops", ROOT, {"accessLevel": "read-write"}),
            200,
        )
        yield client


def names(client, path, who=ROOT, **params):
    response = client.get(f"/api/v0{path}", auth=who, params=params)
    return [f"{r['namespace']}/{r['name']}" for r in expect(response, 200)["repositories"]]


def test_repository_lists_hold_only_what_the_caller_may_see(registry):
    everything = ["acme/app", "acme/hidden", "alice/private", "alice/public"]
    assert names(registry, "/repositories/") == everything
    assert names(registry, "/repositories/", None) == ["alice/public"]
    assert names(registry, "/repositories/", login("carol")) == ["alice/public"]
    assert names(registry, "/repositories/", login("alice")) == ["alice/private", "alice/public"]
    assert names(registry, "/repositories/", login("bob")) == ["acme/app", "alice/public"]
    assert names(registry, "/repositories/", login("olive")) == ["acme/app", "acme/hidden", "alice/public"]
    assert names(registry, "/repositories/alice", login("bob")) == ["alice/public"]
    assert names(registry, "/repositories/acme", login("dan")) == ["acme/app"]
    assert names(registry, "/repositories/nobody") == []
    assert names(registry, "/repositories/", start=1, limit=2) == everything[1:3]
    (document,) = expect(call(registry, "GET", "/repositories/", None), 200)["repositories"]
    assert (
        set(document) == REPOSITORY_KEYS and document["visibility"] == "public" and document["status"] == "ok"
    )


def test_repositories_are_created_by_who_administers_the_namespace(registry):
    made = expect(
        call(
            registry,
            "POST",
            "/repositories/alice",
            login("alice"),
            {"name": "web", "shortDescription": "the site"},
        ),
        201,
    )
    assert {
        k: made[k] for k in ("namespace", "name", "shortDescription", "longDescription", "visibility")
    } == {
        "namespace": "alice",
        "name": "web",
        "shortDescription": "the site",
        "longDescription": "",
        "visibility": "private",  # private unless made public
    }
    refused(registry, "POST", "/repositories/alice", {"name": "theirs"}, anonymous=None, bob=login("bob"))
    refused(registry, "POST", "/repositories/acme", {"name": "theirs"}, bob=login("bob"), dan=login("dan"))
    expect(call(registry, "POST", "/repositories/acme", ROOT, {"name": "by/root"}), 201)
    assert (
        expect(call(registry, "GET", "/repositories/acme/by/root", login("olive")), 200)["name"] == "by/root"
    )
    expect(
        call(registry, "POST", "/repositories/alice", login("alice"), {"name": "web"}),
        400,
        "NAME_TAKEN",
        "alice/web",
    )
    for bad in ["Web", "we b", "web/", "-web"]:
        expect(
            call(registry, "POST", "/repositories/alice", login("alice"), {"name": bad}),
            400,
            "NAME_INVALID",
            bad,
        )
    long = {"name": "long", "shortDescription": "x" * 141}
    expect(
        call(registry, "POST", "/repositories/alice", login("alice"), long),
        400,
        "INVALID_JSON",
        "shortDescription",
    )
    secret = {"name": "secret", "visibility": "secret"}
    expect(
        call(registry, "POST", "/repositories/alice", login("alice"), secret),
        400,
        "INVALID_JSON",
        "visibility",
    )
    assert names(registry, "/repositories/alice") == ["alice/private", "alice/public", "alice/web"]


def test_a_repository_is_seen_by_its_readers_changed_and_deleted_by_its_administrators(registry):
    expect(call(registry, "GET", "/repositories/acme/app", login("carol")), 404, "NAME_UNKNOWN", "acme/app")
    expect(call(registry, "GET", "/repositories/acme/app", None), 401, "UNAUTHORIZED")
    assert set(expect(call(registry, "GET", "/repositories/acme/app", login("bob")), 200)) == REPOSITORY_KEYS
    change = {"visibility": "public", "shortDescription": "the app", "longDescription": "# App\nlong"}
    refused(registry, "PATCH", "/repositories/acme/app", change, bob=login("bob"), dan=login("dan"))
    expect(call(registry, "PATCH", "/repositories/acme/app", login("carol"), change), 404)
    changed = expect(call(registry, "PATCH", "/repositories/acme/app", login("olive"), change), 200)
    assert (changed["visibility"], changed["shortDescription"], changed["longDescription"]) == (
        "public",
        "the app",
        "# App\nlong",
    )
    # Public now: anyone sees it.
    assert expect(call(registry, "GET", "/repositories/acme/app", None), 200)["shortDescription"] == "the app"
    assert "acme/app" in names(registry, "/repositories/", login("carol"))
    expect(call(registry, "PATCH", "/repositories/acme/app", login("olive"), {"visibility": "hidden"}), 400)
    expect(call(registry, "PATCH", "/repositories/acme/app", login("olive"), {"name": "renamed"}), 400)
    expect(call(registry, "PATCH", "/repositories/acme/nothing", login("olive"), change), 404, "NAME_UNKNOWN")

    expect(call(registry, "DELETE", "/repositories/acme/hidden", login("carol")), 404)
    refused(registry, "DELETE", "/repositories/acme/app", anonymous=None, dan=login("dan"))
    expect(call(registry, "DELETE", "/repositories/acme/app", login("olive")), 204)
    expect(call(registry, "DELETE", "/repositories/acme/app", login("olive")), 204)  # also when absent
    expect(call(registry, "GET", "/repositories/acme/app", login("olive")), 404)
    # Its team access went with it: made again, bob does not see it.
    expect(call(registry, "POST", "/repositories/acme", login("olive"), {"name": "app"}), 201)
    expect(call(registry, "GET", "/repositories/acme/app", login("bob")), 404)


def test_tags_and_manifests_are_listed_to_readers_and_deleted_by_writers(accounts_server, registry):
    first, second = Image.random(layers=1), Image.random(layers=1)
    with accounts_server.client(auth=login("olive")) as olive:
        push_image(olive, "acme/app", first, "v1")
        push_image(olive, "acme/app", first, "latest")
        push_image(olive, "acme/app", second, "v2")
    tags = expect(call(registry, "GET", "/repositories/acme/app/tags", login("bob")), 200)
    assert [(t["name"], t["digest"]) for t in tags] == [
        ("latest", first.digest),
        ("v1", first.digest),
        ("v2", second.digest),
    ]
    assert set(tags[0]) == {"name", "digest", "mediaType", "size", "updatedAt"}
    assert tags[0]["mediaType"] == first.media_type and tags[0]["size"] == len(first.manifest)
    manifests = expect(call(registry, "GET", "/repositories/acme/app/manifests", login("bob")), 200)
    assert [(m["digest"], m["tags"]) for m in manifests] == [
        (first.digest, ["latest", "v1"]),
        (second.digest, ["v2"]),
    ]
    paged = registry.get(
        "/api/v0/repositories/acme/app/tags", params={"start": 2, "limit": 1}, auth=login("bob")
    )
    assert [t["name"] for t in expect(paged, 200)] == ["v2"]
    for path in ["/repositories/acme/app/tags", "/repositories/acme/app/manifests"]:
        expect(call(registry, "GET", path, login("carol")), 404, "NAME_UNKNOWN")
        expect(call(registry, "GET", path, None), 401)

    # read-only (bob) may not delete; an outsider is told nothing; read-write (dan) may.
    refused(registry, "DELETE", "/repositories/acme/app/tags/v1", anonymous=None, bob=login("bob"))
    expect(call(registry, "DELETE", "/repositories/acme/app/tags/v1", login("carol")), 404, "NAME_UNKNOWN")
    expect(call(registry, "DELETE", "/repositories/acme/app/tags/v1", login("dan")), 204)
    expect(
        call(registry, "DELETE", "/repositories/acme/app/tags/v1", login("dan")),
        404,
        "MANIFEST_UNKNOWN",
        "v1",
    )
    expect(
        call(registry, "DELETE", f"/repositories/acme/app/tags/{first.digest}", login("dan")),
        400,
        "TAG_INVALID",
    )
    refused(registry, "DELETE", f"/repositories/acme/app/manifests/{first.digest}", bob=login("bob"))
    expect(call(registry, "DELETE", f"/repositories/acme/app/manifests/{first.digest}", login("dan")), 204)
    assert [t["name"] for t in expect(call(registry, "GET", "/repositories/acme/app/tags"), 200)] == ["v2"]
    manifests = expect(call(registry, "GET", "/repositories/acme/app/manifests"), 200)
    assert [m["digest"] for m in manifests] == [second.digest]
    with accounts_server.client(auth=login("olive")) as olive:
        assert olive.get(f"/v2/acme/app/manifests/{second.digest}").status_code == 200
        assert olive.get("/v2/acme/app/manifests/latest").status_code == 404


def test_names_of_more_components_and_of_one(accounts_server, registry):
    image = Image.random(layers=1)
    with accounts_server.client(auth=ROOT) as root:
        push_image(root, "acme/team/app", image, "v1")
        push_image(root, "solo", image, "v1")
    found = expect(call(registry, "GET", "/repositories/acme/team/app", login("olive")), 200)
    assert (found["namespace"], found["name"]) == ("acme", "team/app")
    assert [
        t["name"]
        for t in expect(call(registry, "GET", "/repositories/acme/team/app/tags", login("olive")), 200)
    ] == ["v1"]
    solo = [
        r for r in expect(call(registry, "GET", "/repositories/"), 200)["repositories"] if r["name"] == "solo"
    ]
    assert solo == [{**solo[0], "namespace": ""}]
    # A name of one component is in no namespace: a system administrator's alone.
    expect(call(registry, "DELETE", "/repositories/solo", login("olive")), 404)
    expect(call(registry, "DELETE", "/repositories/solo"), 204)
    expect(call(registry, "DELETE", "/repositories/acme/team/app/tags/v1", login("olive")), 204)
    expect(call(registry, "DELETE", "/repositories/acme/team/app", login("olive")), 204)
    assert "acme/team/app" not in names(registry, "/repositories/")
