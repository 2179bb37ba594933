"""DTR's team access to an organization's repositories and namespaces, on a real server with
Wharf's accounts on: who grants it (admin on the repository or the namespace), what it must
be (an organization's repository, one of its own teams), and what it gives."""

from __future__ import annotations

import pytest

from .dtr import ROOT, call, expect, login, organization, refused, users

pytestmark = pytest.mark.parametrize("accounts_server", ["sqlite+filesystem"], indirect=True)


@pytest.fixture
def acme(accounts_server):
    """acme (owned by olive; devs: bob; ops: dan) with a private repository acme/app, the
    organization other with its team guests, and carol in no team."""
    users(accounts_server, "olive", "bob", "carol", "dan")
    with accounts_server.client() as client:
        organization(client, "acme", owners=("olive",), devs=("bob",), ops=("dan",))
        organization(client, "other", guests=("carol",))
        expect(call(client, "POST", "/repositories/acme", ROOT, {"name": "app"}), 201)
        yield client


def levels(client, path, who=ROOT):
    return [
        (grant["team"]["name"], grant["accessLevel"])
        for grant in expect(call(client, "GET", path, who), 200)["teamAccessList"]
    ]


def test_the_owners_grant_a_team_access_to_a_repository_and_revoke_it(acme):
    granted = expect(
        call(
            acme,
            "PUT",
            "/repositories/acme/app/teamAccess/devs",
            login("olive"),
            {"accessLevel": "read-only"},
        ),
        200,
    )
    assert set(granted) == {"accessLevel", "team", "repository"}
    assert (granted["accessLevel"], granted["team"]["name"]) == ("read-only", "devs")
    assert (granted["repository"]["namespace"], granted["repository"]["name"]) == ("acme", "app")
    # Bob sees it now, may not change its team access with read-only, and an outsider is told nothing.
    assert expect(call(acme, "GET", "/repositories/acme/app", login("bob")), 200)["name"] == "app"
    refused(
        acme,
        "PUT",
        "/repositories/acme/app/teamAccess/ops",
        {"accessLevel": "admin"},
        anonymous=None,
        bob=login("bob"),
    )
    expect(
        call(acme, "PUT", "/repositories/acme/app/teamAccess/ops", login("dan"), {"accessLevel": "admin"}),
        404,
        "NAME_UNKNOWN",
    )
    expect(call(acme, "GET", "/repositories/acme/app/teamAccess", login("dan")), 404, "NAME_UNKNOWN")
    refused(acme, "GET", "/repositories/acme/app/teamAccess", anonymous=None, bob=login("bob"))

    expect(
        call(acme, "PUT", "/repositories/acme/app/teamAccess/devs", login("olive"), {"accessLevel": "admin"}),
        200,
    )
    # With admin on it, bob grants another team of acme himself.
    expect(
        call(
            acme, "PUT", "/repositories/acme/app/teamAccess/ops", login("bob"), {"accessLevel": "read-write"}
        ),
        200,
    )
    answer = expect(call(acme, "GET", "/repositories/acme/app/teamAccess", login("bob")), 200)
    assert answer["repository"]["name"] == "app"
    assert levels(acme, "/repositories/acme/app/teamAccess") == [("devs", "admin"), ("ops", "read-write")]
    paged = acme.get("/api/v0/repositories/acme/app/teamAccess", params={"start": 1, "limit": 5}, auth=ROOT)
    assert [grant["team"]["name"] for grant in expect(paged, 200)["teamAccessList"]] == ["ops"]

    expect(call(acme, "DELETE", "/repositories/acme/app/teamAccess/ops", login("bob")), 204)
    expect(
        call(acme, "DELETE", "/repositories/acme/app/teamAccess/ops", login("bob")), 204
    )  # not granted: 204
    assert levels(acme, "/repositories/acme/app/teamAccess") == [("devs", "admin")]
    expect(call(acme, "GET", "/repositories/acme/app", login("dan")), 404)


def test_team_access_is_for_an_organizations_repositories_and_its_own_teams(acme):
    users_repository = call(acme, "POST", "/repositories/bob", login("bob"), {"name": "mine"})
    expect(users_repository, 201)
    level = {"accessLevel": "read-only"}
    expect(
        call(acme, "PUT", "/repositories/bob/mine/teamAccess/devs", login("bob"), level),
        400,
        "TEAM_ACCESS_INVALID",
        "bob/mine is not owned by an organization",
    )
    expect(call(acme, "GET", "/repositories/bob/mine/teamAccess", login("bob")), 400, "TEAM_ACCESS_INVALID")
    expect(
        call(acme, "PUT", "/repositories/acme/app/teamAccess/guests", ROOT, level),
        400,
        "TEAM_ACCESS_INVALID",
        "'guests' is not a team of the owning organization acme",
    )
    expect(
        call(acme, "PUT", "/repositories/acme/app/teamAccess/nothing", ROOT, level),
        400,
        "TEAM_ACCESS_INVALID",
    )
    expect(
        call(acme, "PUT", "/repositories/acme/app/teamAccess/devs", ROOT, {"accessLevel": "write"}),
        400,
        "INVALID_JSON",
    )
    expect(call(acme, "PUT", "/repositories/acme/nothing/teamAccess/devs", ROOT, level), 404, "NAME_UNKNOWN")
    expect(
        call(acme, "PUT", "/repositoryNamespaces/bob/teamAccess/devs", ROOT, level),
        400,
        "TEAM_ACCESS_INVALID",
        "namespace bob is not owned by an organization",
    )
    expect(
        call(acme, "PUT", "/repositoryNamespaces/acme/teamAccess/guests", ROOT, level),
        400,
        "TEAM_ACCESS_INVALID",
    )
    assert levels(acme, "/repositories/acme/app/teamAccess") == []
    assert levels(acme, "/repositoryNamespaces/acme/teamAccess") == []


def test_access_to_a_namespace_reaches_every_repository_in_it_existing_or_to_come(acme):
    refused(
        acme,
        "PUT",
        "/repositoryNamespaces/acme/teamAccess/devs",
        {"accessLevel": "read-only"},
        anonymous=None,
        bob=login("bob"),
    )
    granted = expect(
        call(
            acme,
            "PUT",
            "/repositoryNamespaces/acme/teamAccess/devs",
            login("olive"),
            {"accessLevel": "read-only"},
        ),
        200,
    )
    assert set(granted) == {"accessLevel", "team", "namespace"}
    assert (granted["accessLevel"], granted["team"]["name"], granted["namespace"]) == (
        "read-only",
        "devs",
        "acme",
    )
    expect(call(acme, "POST", "/repositories/acme", ROOT, {"name": "later/one"}), 201)
    seen = expect(call(acme, "GET", "/repositories/acme", login("bob")), 200)["repositories"]
    assert [repository["name"] for repository in seen] == ["app", "later/one"]
    assert expect(call(acme, "GET", "/repositories/acme", login("dan")), 200)["repositories"] == []
    # read-only creates nothing; admin on the namespace creates repositories in it.
    refused(acme, "POST", "/repositories/acme", {"name": "mine"}, bob=login("bob"))
    expect(
        call(
            acme,
            "PUT",
            "/repositoryNamespaces/acme/teamAccess/devs",
            login("olive"),
            {"accessLevel": "admin"},
        ),
        200,
    )
    expect(call(acme, "POST", "/repositories/acme", login("bob"), {"name": "mine"}), 201)
    # ... and grants other teams of acme access to the namespace.
    expect(
        call(
            acme,
            "PUT",
            "/repositoryNamespaces/acme/teamAccess/ops",
            login("bob"),
            {"accessLevel": "read-write"},
        ),
        200,
    )
    assert levels(acme, "/repositoryNamespaces/acme/teamAccess", login("bob")) == [
        ("devs", "admin"),
        ("ops", "read-write"),
    ]
    access = expect(call(acme, "GET", "/accounts/dan/repositoryAccess/acme/later/one", login("dan")), 200)
    assert access["accessLevel"] == "read-write"

    refused(
        acme,
        "GET",
        "/repositoryNamespaces/acme/teamAccess",
        anonymous=None,
        dan=login("dan"),
        carol=login("carol"),
    )
    expect(call(acme, "DELETE", "/repositoryNamespaces/acme/teamAccess/ops", login("olive")), 204)
    expect(call(acme, "DELETE", "/repositoryNamespaces/acme/teamAccess/ops", login("olive")), 204)
    refused(acme, "DELETE", "/repositoryNamespaces/acme/teamAccess/devs", anonymous=None, dan=login("dan"))
    assert expect(call(acme, "GET", "/repositories/acme", login("dan")), 200)["repositories"] == []


def test_one_teams_access_to_a_namespace_is_shown_to_its_members_and_the_namespaces_admins(acme):
    expect(
        call(acme, "PUT", "/repositoryNamespaces/acme/teamAccess/devs", ROOT, {"accessLevel": "read-write"}),
        200,
    )
    for who in [login("bob"), login("olive"), ROOT]:
        found = expect(call(acme, "GET", "/repositoryNamespaces/acme/teamAccess/devs", who), 200)
        assert (found["accessLevel"], found["team"]["name"], found["namespace"]) == (
            "read-write",
            "devs",
            "acme",
        )
    refused(
        acme,
        "GET",
        "/repositoryNamespaces/acme/teamAccess/devs",
        anonymous=None,
        dan=login("dan"),
        carol=login("carol"),
    )
    expect(
        call(acme, "GET", "/repositoryNamespaces/acme/teamAccess/ops", login("dan")),
        404,
        "NO_SUCH_ACCESS",
        "ops",
    )
    expect(call(acme, "GET", "/repositoryNamespaces/acme/teamAccess/nothing"), 400, "TEAM_ACCESS_INVALID")
