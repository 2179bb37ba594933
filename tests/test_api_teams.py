"""DTR's teams API on a real server with Wharf's accounts on: an organization's teams and
their members, who sees them (the organization's members, a team's members) and who changes
them (its owners and system administrators)."""

from __future__ import annotations

import pytest

from .dtr import ROOT, call, expect, login, organization, refused, users
from .oci import Image, push_image

# One stack: the rules are the services' and the rows the store's suite checks on both;
# test_api_accounts.py runs its server on both stacks.
pytestmark = pytest.mark.parametrize("accounts_server", ["sqlite+filesystem"], indirect=True)

TEAM_KEYS = {"id", "orgID", "type", "name", "description"}


@pytest.fixture
def acme(accounts_server):
    """acme, owned by olive, with a team devs of bob; carol is in no team; dan is in ops."""
    users(accounts_server, "olive", "bob", "carol", "dan")
    with accounts_server.client() as client:
        organization(client, "acme", owners=("olive",), devs=("bob",), ops=("dan",))
        yield client


def test_the_owners_create_teams_that_the_members_of_the_organization_see(acme):
    made = expect(
        call(
            acme,
            "POST",
            "/accounts/acme/teams",
            login("olive"),
            {"name": "qa", "description": "tests", "type": "managed"},
        ),
        201,
    )
    assert set(made) == TEAM_KEYS
    org = expect(call(acme, "GET", "/accounts/acme"), 200)
    assert (made["name"], made["description"], made["type"], made["orgID"]) == (
        "qa",
        "tests",
        "managed",
        org["id"],
    )
    for who in [login("bob"), login("olive"), ROOT]:
        listed = expect(call(acme, "GET", "/accounts/acme/teams", who), 200)["teams"]
        assert [team["name"] for team in listed] == ["devs", "ops", "owners", "qa"]
        assert expect(call(acme, "GET", "/accounts/acme/teams/qa", who), 200) == made
    refused(acme, "GET", "/accounts/acme/teams", anonymous=None, carol=login("carol"))
    refused(acme, "GET", "/accounts/acme/teams/qa", anonymous=None, carol=login("carol"))
    refused(
        acme,
        "POST",
        "/accounts/acme/teams",
        {"name": "x"},
        anonymous=None,
        bob=login("bob"),
        carol=login("carol"),
    )
    expect(call(acme, "GET", "/accounts/acme/teams/nothing"), 404, "NO_SUCH_TEAM", "'nothing'")
    expect(call(acme, "GET", "/accounts/bob/teams"), 404, "NO_SUCH_ACCOUNT", "no organization named 'bob'")
    expect(
        call(acme, "POST", "/accounts/acme/teams", login("olive"), {"name": "qa"}), 400, "NAME_TAKEN", "'qa'"
    )
    for bad in ["QA", "q a", "-qa", ""]:
        expect(
            call(acme, "POST", "/accounts/acme/teams", login("olive"), {"name": bad}),
            400,
            "INVALID_NAME",
            repr(bad),
        )


def test_the_owners_rename_and_delete_teams_but_the_owners_team_stays(acme):
    refused(acme, "PATCH", "/accounts/acme/teams/devs", {"name": "x"}, anonymous=None, bob=login("bob"))
    renamed = expect(
        call(
            acme,
            "PATCH",
            "/accounts/acme/teams/devs",
            login("olive"),
            {"name": "developers", "description": "apps"},
        ),
        200,
    )
    assert (renamed["name"], renamed["description"]) == ("developers", "apps")
    expect(call(acme, "GET", "/accounts/acme/teams/devs"), 404)
    members = expect(call(acme, "GET", "/accounts/acme/teams/developers/members"), 200)["members"]
    assert [member["name"] for member in members] == ["bob"]  # the members went with it
    expect(
        call(acme, "PATCH", "/accounts/acme/teams/developers", login("olive"), {"name": "ops"}),
        400,
        "NAME_TAKEN",
    )
    expect(call(acme, "PATCH", "/accounts/acme/teams/owners", ROOT, {"name": "bosses"}), 400, "OWNERS_TEAM")
    expect(call(acme, "DELETE", "/accounts/acme/teams/owners", ROOT), 400, "OWNERS_TEAM")
    assert (
        expect(call(acme, "PATCH", "/accounts/acme/teams/owners", ROOT, {"description": "run acme"}), 200)[
            "description"
        ]
        == "run acme"
    )

    refused(acme, "DELETE", "/accounts/acme/teams/ops", anonymous=None, dan=login("dan"))
    expect(call(acme, "DELETE", "/accounts/acme/teams/ops", login("olive")), 204)
    expect(call(acme, "DELETE", "/accounts/acme/teams/ops", login("olive")), 204)  # also when absent
    expect(call(acme, "GET", "/accounts/acme/teams/ops"), 404)
    # dan was only in ops: no longer a member of acme.
    assert expect(call(acme, "GET", "/accounts/dan/organizations", login("dan")), 200)["organizations"] == []


def test_members_are_added_and_removed_by_the_owners_and_listed_to_the_team(acme):
    refused(acme, "PUT", "/accounts/acme/teams/devs/members/carol", anonymous=None, bob=login("bob"))
    added = expect(call(acme, "PUT", "/accounts/acme/teams/devs/members/carol", login("olive")), 200)
    assert (added["name"], added["type"]) == ("carol", "user")
    expect(
        call(acme, "PUT", "/accounts/acme/teams/devs/members/carol", login("olive")), 200
    )  # twice: no change
    for who in [login("bob"), login("carol"), login("olive"), ROOT]:
        members = expect(call(acme, "GET", "/accounts/acme/teams/devs/members", who), 200)["members"]
        assert [(m["name"], m["type"]) for m in members] == [("bob", "user"), ("carol", "user")]
        assert {"id", "type", "name", "isActive"} <= set(members[0])
    refused(acme, "GET", "/accounts/acme/teams/devs/members", anonymous=None, dan=login("dan"))

    # Whoever sees the team may ask whether someone is in it.
    expect(call(acme, "GET", "/accounts/acme/teams/devs/members/carol", login("dan")), 204)
    expect(
        call(acme, "GET", "/accounts/acme/teams/devs/members/dan", login("bob")), 404, "NOT_A_MEMBER", "'dan'"
    )
    expect(call(acme, "GET", "/accounts/acme/teams/devs/members/nobody", login("bob")), 404, "NOT_A_MEMBER")
    users_only = call(acme, "PUT", "/accounts/acme/teams/devs/members/nobody", login("olive"))
    expect(users_only, 404, "NO_SUCH_ACCOUNT", "'nobody'")
    expect(
        call(acme, "PUT", "/accounts/acme/teams/devs/members/acme", login("olive")), 404, "NO_SUCH_ACCOUNT"
    )
    expect(
        call(acme, "PUT", "/accounts/acme/teams/nothing/members/carol", login("olive")), 404, "NO_SUCH_TEAM"
    )

    refused(acme, "DELETE", "/accounts/acme/teams/devs/members/carol", anonymous=None, bob=login("bob"))
    expect(call(acme, "DELETE", "/accounts/acme/teams/devs/members/carol", login("olive")), 204)
    expect(
        call(acme, "DELETE", "/accounts/acme/teams/devs/members/carol", login("olive")), 204
    )  # not a member
    expect(call(acme, "GET", "/accounts/acme/teams/devs/members/carol", login("bob")), 404)
    # Carol is in no team of acme again: its teams are not hers to see.
    refused(acme, "GET", "/accounts/acme/teams", carol=login("carol"))


def test_an_owner_added_to_the_owners_team_manages_the_organization(acme):
    refused(acme, "POST", "/accounts/acme/teams", {"name": "qa"}, bob=login("bob"))
    expect(call(acme, "PUT", "/accounts/acme/teams/owners/members/bob", login("olive")), 200)
    expect(call(acme, "POST", "/accounts/acme/teams", login("bob"), {"name": "qa"}), 201)
    expect(call(acme, "DELETE", "/accounts/acme/teams/owners/members/bob", login("olive")), 204)
    refused(acme, "DELETE", "/accounts/acme/teams/qa", bob=login("bob"))


def test_a_teams_repository_access_is_shown_to_its_members_and_the_owners(accounts_server, acme):
    with accounts_server.client(auth=ROOT) as root:  # a repository named as the namespace
        push_image(root, "acme", Image.random(layers=1), "v1")
    expect(call(acme, "POST", "/repositories/acme", ROOT, {"name": "app"}), 201)
    expect(call(acme, "POST", "/repositories/acme", ROOT, {"name": "site/www"}), 201)
    expect(
        call(acme, "PUT", "/repositories/acme/app/teamAccess/devs", ROOT, {"accessLevel": "read-write"}), 200
    )
    expect(
        call(acme, "PUT", "/repositories/acme/site/www/teamAccess/devs", ROOT, {"accessLevel": "admin"}), 200
    )
    expect(
        call(acme, "PUT", "/repositoryNamespaces/acme/teamAccess/devs", ROOT, {"accessLevel": "read-only"}),
        200,
    )
    for who in [login("bob"), login("olive"), ROOT]:
        found = expect(call(acme, "GET", "/accounts/acme/teams/devs/repositoryAccess", who), 200)
        assert found["team"]["name"] == "devs"
        assert [
            (grant["accessLevel"], grant["repository"]["namespace"], grant["repository"]["name"])
            for grant in found["repositoryAccessList"]
        ] == [("read-write", "acme", "app"), ("admin", "acme", "site/www")]
    refused(acme, "GET", "/accounts/acme/teams/devs/repositoryAccess", anonymous=None, dan=login("dan"))
    expect(call(acme, "GET", "/accounts/acme/teams/nothing/repositoryAccess"), 404, "NO_SUCH_TEAM")
