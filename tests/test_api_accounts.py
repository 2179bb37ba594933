"""DTR's accounts API on a real server with Wharf's accounts on, on both stacks: users and
organizations, sign-up, activation, passwords, a user's organizations and access, and
personal access tokens."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from .dtr import ROOT, call, expect, login, organization, refused, users

ANONYMOUS = None


def test_an_administrator_creates_users_and_organizations_and_any_user_sees_them(accounts_server):
    users(accounts_server, "bob")
    with accounts_server.client() as client:
        alice = expect(
            call(
                client, "POST", "/accounts", ROOT, {"type": "user", "name": "alice", "password": "alice-pw-1"}
            ),
            200,
        )
        assert set(alice) == {"id", "type", "name", "isActive", "isAdmin"}
        assert (alice["type"], alice["name"], alice["isActive"], alice["isAdmin"]) == (
            "user",
            "alice",
            True,
            False,
        )
        acme = expect(call(client, "POST", "/accounts", ROOT, {"type": "organization", "name": "acme"}), 200)
        assert set(acme) == {"id", "type", "name", "isActive"}  # no isAdmin for an organization
        assert (acme["type"], acme["name"], acme["isActive"]) == ("organization", "acme", True)

        listed = expect(call(client, "GET", "/accounts", login("bob")), 200)["accounts"]
        assert [account["name"] for account in listed] == ["acme", "alice", "bob", "root"]
        assert not any("password" in str(account).lower() or "argon" in str(account) for account in listed)
        paged = expect(
            client.get("/api/v0/accounts", params={"start": 1, "limit": 2}, auth=login("bob")), 200
        )
        assert [account["name"] for account in paged["accounts"]] == ["alice", "bob"]
        assert expect(call(client, "GET", "/accounts/alice", login("bob")), 200) == alice
        expect(call(client, "GET", "/accounts/nobody", login("bob")), 404, "NO_SUCH_ACCOUNT", "'nobody'")
        for path in ["/accounts", "/accounts/alice"]:
            expect(call(client, "GET", path, ANONYMOUS), 401, "UNAUTHORIZED")
        # The password works at once; the answer never carried it.
        assert client.get("/v2/", auth=("alice", "alice-pw-1")).status_code == 200


def test_anyone_may_sign_up_but_stays_inactive_until_an_administrator_activates_them(accounts_server):
    users(accounts_server, "bob")
    with accounts_server.client() as client:
        carol = expect(
            call(
                client,
                "POST",
                "/accounts",
                ANONYMOUS,
                {"type": "user", "name": "carol", "password": "carol-pw-1"},
            ),
            200,
        )
        assert (carol["isActive"], carol["isAdmin"]) == (False, False)
        assert client.get("/v2/", auth=("carol", "carol-pw-1")).status_code == 401
        # Not an administrator, and no organization, unless an administrator makes them.
        admin = {"type": "user", "name": "dave", "password": "dave-pw-12", "isAdmin": True}
        expect(call(client, "POST", "/accounts", ANONYMOUS, admin), 401, "UNAUTHORIZED")
        expect(call(client, "POST", "/accounts", login("bob"), admin), 403, "DENIED")
        refused(
            client,
            "POST",
            "/accounts",
            {"type": "organization", "name": "org"},
            anonymous=None,
            bob=login("bob"),
        )
        expect(call(client, "GET", "/accounts/dave"), 404)
        expect(call(client, "GET", "/accounts/org"), 404)

        refused(client, "PUT", "/accounts/carol/activate", anonymous=None, bob=login("bob"))
        assert expect(call(client, "PUT", "/accounts/carol/activate"), 200)["isActive"] is True
        assert client.get("/v2/", auth=("carol", "carol-pw-1")).status_code == 200
        refused(client, "PUT", "/accounts/carol/deactivate", anonymous=None, carol=("carol", "carol-pw-1"))
        assert expect(call(client, "PUT", "/accounts/carol/deactivate"), 200)["isActive"] is False
        assert client.get("/v2/", auth=("carol", "carol-pw-1")).status_code == 401
        expect(call(client, "PUT", "/accounts/nobody/activate"), 404, "NO_SUCH_ACCOUNT", "nobody")
        # An administrator's creation is active and may make an administrator.
        made = expect(call(client, "POST", "/accounts", ROOT, admin), 200)
        assert (made["isActive"], made["isAdmin"]) == (True, True)


def test_signing_up_needs_wharfs_accounts(make_server):
    """Without auth every loopback client may do everything: an account made then is active."""
    with make_server().client() as client:
        made = expect(
            call(client, "POST", "/accounts", None, {"type": "user", "name": "eve", "password": "eve-pw-12"}),
            200,
        )
        assert made["isActive"] is True


@pytest.mark.parametrize(
    "name", ["Alice", "-alice", "_alice", "al ice", "al.ice", "alice/x", "émile", "a" * 256, ""]
)
def test_names_the_namespace_rule_refuses_are_refused_naming_them(accounts_server, name):
    with accounts_server.client() as client:
        for body in [
            {"type": "user", "name": name, "password": "long-enough"},
            {"type": "organization", "name": name},
        ]:
            problem = expect(call(client, "POST", "/accounts", ROOT, body), 400, "INVALID_NAME")
            assert repr(name) in problem["message"]
        assert [account["name"] for account in expect(call(client, "GET", "/accounts"), 200)["accounts"]] == [
            "root"
        ]


def test_a_name_is_one_namespace_taken_once_by_a_user_or_an_organization(accounts_server):
    users(accounts_server, "bob")
    with accounts_server.client() as client:
        for body in [
            {"type": "user", "name": "bob", "password": "long-enough"},
            {"type": "organization", "name": "bob"},
        ]:
            expect(call(client, "POST", "/accounts", ROOT, body), 400, "NAME_TAKEN", "'bob'")
        assert expect(call(client, "GET", "/accounts/bob"), 200)["type"] == "user"


def test_passwords_under_eight_characters_are_refused(accounts_server):
    users(accounts_server, "bob")
    with accounts_server.client() as client:
        short = {"type": "user", "name": "shorty", "password": "1234567"}
        expect(call(client, "POST", "/accounts", ROOT, short), 400, "INVALID_PASSWORD", "password too short")
        expect(call(client, "GET", "/accounts/shorty"), 404)
        change = {"oldPassword": login("bob")[1], "newPassword": "1234567"}
        expect(
            call(client, "POST", "/accounts/bob/changePassword", login("bob"), change),
            400,
            "INVALID_PASSWORD",
            "password too short",
        )
        assert client.get("/v2/", auth=login("bob")).status_code == 200  # unchanged


def test_a_user_changes_their_password_with_the_old_one_and_an_administrator_without(accounts_server):
    users(accounts_server, "bob", "carol")
    with accounts_server.client() as client:
        wrong = {"oldPassword": "not-the-password", "newPassword": "bob-second-pw"}
        expect(
            call(client, "POST", "/accounts/bob/changePassword", login("bob"), wrong), 400, "INVALID_PASSWORD"
        )
        right = {"oldPassword": login("bob")[1], "newPassword": "bob-second-pw"}
        refused(client, "POST", "/accounts/bob/changePassword", right, anonymous=None, carol=login("carol"))
        changed = expect(call(client, "POST", "/accounts/bob/changePassword", login("bob"), right), 200)
        assert changed["name"] == "bob" and "password" not in str(changed).lower()
        assert client.get("/v2/", auth=login("bob")).status_code == 401
        assert client.get("/v2/", auth=("bob", "bob-second-pw")).status_code == 200
        expect(
            call(client, "POST", "/accounts/bob/changePassword", ROOT, {"newPassword": "bob-third-pw"}), 200
        )
        assert client.get("/v2/", auth=("bob", "bob-third-pw")).status_code == 200
        expect(
            call(client, "POST", "/accounts/nobody/changePassword", ROOT, {"newPassword": "long-enough"}), 404
        )


def test_an_administrator_deletes_accounts_and_deleting_one_not_there_is_no_error(accounts_server):
    users(accounts_server, "bob", "carol")
    with accounts_server.client() as client:
        refused(client, "DELETE", "/accounts/carol", anonymous=None, bob=login("bob"))
        assert client.get("/v2/", auth=login("carol")).status_code == 200
        expect(call(client, "DELETE", "/accounts/carol"), 204)
        expect(call(client, "DELETE", "/accounts/carol"), 204)
        expect(call(client, "DELETE", "/accounts/Not%20A%20Name"), 204)
        expect(call(client, "GET", "/accounts/carol"), 404)
        assert client.get("/v2/", auth=login("carol")).status_code == 401


def test_a_user_sees_their_organizations_and_only_theirs(accounts_server):
    users(accounts_server, "bob", "carol")
    with accounts_server.client() as client:
        organization(client, "acme", owners=("carol",), devs=("bob",))
        organization(client, "other")
        mine = expect(call(client, "GET", "/accounts/bob/organizations", login("bob")), 200)["organizations"]
        assert [(org["name"], org["type"]) for org in mine] == [("acme", "organization")]
        assert expect(call(client, "GET", "/accounts/bob/organizations"), 200)["organizations"] == mine
        refused(client, "GET", "/accounts/bob/organizations", anonymous=None, carol=login("carol"))
        expect(
            call(client, "GET", "/accounts/acme/organizations"),
            404,
            "NO_SUCH_ACCOUNT",
            "no user named 'acme'",
        )


def test_a_user_or_an_administrator_asks_what_access_the_user_has_to_a_repository(accounts_server):
    users(accounts_server, "bob", "carol")
    with accounts_server.client() as client:
        organization(client, "acme", devs=("bob",))
        expect(call(client, "POST", "/repositories/acme", ROOT, {"name": "app"}), 201)
        expect(
            call(
                client, "PUT", "/repositories/acme/app/teamAccess/devs", ROOT, {"accessLevel": "read-write"}
            ),
            200,
        )
        access = expect(call(client, "GET", "/accounts/bob/repositoryAccess/acme/app", login("bob")), 200)
        assert access["accessLevel"] == "read-write"
        assert (access["user"]["name"], access["repository"]["namespace"], access["repository"]["name"]) == (
            "bob",
            "acme",
            "app",
        )
        # Carol may not ask for bob; asking for herself, she may not see the repository.
        refused(
            client, "GET", "/accounts/bob/repositoryAccess/acme/app", anonymous=None, carol=login("carol")
        )
        expect(
            call(client, "GET", "/accounts/carol/repositoryAccess/acme/app", login("carol")),
            404,
            "NAME_UNKNOWN",
        )
        assert (
            expect(call(client, "GET", "/accounts/carol/repositoryAccess/acme/app"), 200)["accessLevel"]
            == "none"
        )
        expect(
            call(client, "GET", "/accounts/bob/repositoryAccess/acme/nothing"),
            404,
            "NAME_UNKNOWN",
            "acme/nothing",
        )


def test_a_personal_access_token_is_shown_once_works_as_a_password_and_stops_when_revoked(accounts_server):
    users(accounts_server, "bob", "carol")
    with accounts_server.client() as client:
        made = expect(
            call(client, "POST", "/accounts/bob/tokens", login("bob"), {"name": "ci", "expiresIn": "30d"}),
            201,
        )
        assert set(made) == {"id", "name", "createdAt", "expiresAt", "token"}
        assert made["name"] == "ci" and made["token"].startswith("wharf_pat_")
        lifetime = datetime.fromisoformat(made["expiresAt"]) - datetime.fromisoformat(made["createdAt"])
        assert abs(lifetime - timedelta(days=30)) < timedelta(seconds=5)
        assert client.get("/v2/", auth=("bob", made["token"])).status_code == 200
        assert client.get("/v2/", auth=("carol", made["token"])).status_code == 401  # bob's, not carol's

        (listed,) = expect(call(client, "GET", "/accounts/bob/tokens", login("bob")), 200)["tokens"]
        assert set(listed) == {"id", "name", "createdAt", "expiresAt", "lastUsedAt"}
        assert listed["id"] == made["id"] and listed["lastUsedAt"] is not None
        assert made["token"] not in client.get("/api/v0/accounts/bob/tokens", auth=login("bob")).text

        # Tokens are their user's, and any user's for an administrator.
        refused(client, "GET", "/accounts/bob/tokens", anonymous=None, carol=login("carol"))
        refused(client, "POST", "/accounts/bob/tokens", {"name": "x"}, anonymous=None, carol=login("carol"))
        refused(client, "DELETE", f"/accounts/bob/tokens/{made['id']}", anonymous=None, carol=login("carol"))
        forever = expect(call(client, "POST", "/accounts/bob/tokens", ROOT, {"name": "by root"}), 201)
        assert forever["expiresAt"] is None
        assert len(expect(call(client, "GET", "/accounts/bob/tokens"), 200)["tokens"]) == 2

        expect(call(client, "DELETE", f"/accounts/bob/tokens/{made['id']}", login("bob")), 204)
        assert client.get("/v2/", auth=("bob", made["token"])).status_code == 401
        assert client.get("/api/v0/accounts", auth=("bob", made["token"])).status_code == 401
        expect(
            call(client, "DELETE", f"/accounts/bob/tokens/{made['id']}", login("bob")), 404, "NO_SUCH_TOKEN"
        )
        assert client.get("/v2/", auth=("bob", forever["token"])).status_code == 200


@pytest.mark.parametrize(("expires", "says"), [("soon", "'soon'"), ("0s", "longer than 0"), ("-1d", "'-1d'")])
def test_a_token_lifetime_that_is_no_duration_is_refused(accounts_server, expires, says):
    users(accounts_server, "bob")
    with accounts_server.client() as client:
        body = {"name": "ci", "expiresIn": expires}
        expect(
            call(client, "POST", "/accounts/bob/tokens", login("bob"), body), 400, "INVALID_DURATION", says
        )
        expect(call(client, "POST", "/accounts/bob/tokens", login("bob"), {"name": ""}), 400, "INVALID_NAME")
        expect(call(client, "POST", "/accounts/nobody/tokens", ROOT, {"name": "ci"}), 404, "NO_SUCH_ACCOUNT")
        assert expect(call(client, "GET", "/accounts/bob/tokens", login("bob")), 200)["tokens"] == []


def test_names_and_text_that_postgresql_cannot_hold_are_refused_not_failed_on(accounts_server):
    """A NUL, or a lone surrogate (which JSON can carry), in a name, a password, a description
    or a path: an answer that says so, never a 500 (PostgreSQL cannot store either)."""
    users(accounts_server, "bob")
    with accounts_server.client() as client:
        organization(client, "acme")
        posted = [
            ("/accounts", {"type": "user", "name": "nul\x00", "password": "long-enough"}, "INVALID_NAME"),
            (
                "/accounts",
                {"type": "user", "name": "sur", "password": "long-enough\ud800"},
                "INVALID_PASSWORD",
            ),
            ("/accounts", {"type": "user", "name": "sur\ud800", "password": "long-enough"}, "INVALID_NAME"),
            ("/accounts", {"type": "organization", "name": "sur", "\ud800": 1}, "INVALID_JSON"),
            ("/accounts/acme/teams", {"name": "\ud800"}, "INVALID_NAME"),
            ("/repositories/bob", {"name": "app\ud800"}, "NAME_INVALID"),
            ("/accounts/acme/teams", {"name": "qa", "description": "a\x00b"}, "INVALID_TEXT"),
            ("/accounts/bob/tokens", {"name": "ci\ud800"}, "INVALID_TEXT"),
            ("/repositories/bob", {"name": "app", "longDescription": "\x00"}, "INVALID_TEXT"),
        ]
        for path, body, code in posted:
            content = json.dumps(body).encode()  # as JSON writes them: \u0000, \ud800
            response = client.post(
                f"/api/v0{path}", content=content, auth=ROOT, headers={"Content-Type": "application/json"}
            )
            expect(response, 400, code)
        for method, path in [
            ("GET", "/accounts/a%00b"),
            ("GET", "/accounts/acme/teams/a%00b"),
            ("GET", "/accounts/acme/teams/owners/members/a%00b"),
            ("DELETE", "/accounts/bob/tokens/a%00b"),
            ("GET", "/repositories/bob/a%00b"),
            ("GET", "/repositoryNamespaces/acme/teamAccess/a%00b"),
            ("GET", "/accounts/bob/repositoryAccess/bob/a%00b"),
        ]:
            assert call(client, method, path).status_code in (400, 404), path
        post = client.post(
            "/api/v0/accounts/bob/changePassword",
            content=b'{"oldPassword": "\\ud800", "newPassword": "long-enough"}',
            auth=login("bob"),
            headers={"Content-Type": "application/json"},
        )
        expect(post, 400, "INVALID_PASSWORD", "old password is wrong")
