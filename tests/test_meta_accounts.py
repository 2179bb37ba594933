"""Accounts and access in the metadata store: one suite run on every backend (SQLite and
PostgreSQL), with the access rule of services/access.py deciding from the facts it reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wharf.meta.events import Event
from wharf.services.access import AccessService, Level
from wharf.services.caller import Caller

from .meta import EVENT, digest, manifest


async def _user(store, name: str, admin: bool = False) -> None:
    assert await store.accounts.create_account(name, "user", "hash", True, admin, EVENT) is not None


async def _image(store, repository: str, name: str) -> None:
    await store.blobs.link(repository, digest("c"), 1, EVENT)
    await store.manifests.put(repository, manifest(name, (digest("c"),)), "v1", EVENT)


async def test_accounts_are_created_once_listed_changed_and_deleted(store):
    alice = await store.accounts.create_account(
        "alice", "user", "h1", False, False, Event("root", "account.create")
    )
    assert alice is not None and alice.kind == "user" and not alice.active and alice.password_hash == "h1"
    assert await store.accounts.create_account("alice", "organization", None, True, False, EVENT) is None
    org = await store.accounts.create_account("acme", "organization", None, True, False, EVENT)
    assert org is not None and [t.name for t in await store.accounts.teams("acme")] == ["owners"]
    assert [a.name for a in await store.accounts.accounts(0, 10)] == ["acme", "alice"]
    assert [a.name for a in await store.accounts.accounts(1, 10)] == ["alice"]
    changed = await store.accounts.update_account("alice", EVENT, password_hash="h2", active=True, admin=True)
    assert changed is not None and changed.active and changed.admin and changed.password_hash == "h2"
    assert await store.accounts.update_account("nobody", EVENT, active=True) is None
    assert await store.accounts.administrators() == 1
    assert await store.accounts.delete_account("alice", EVENT)
    assert not await store.accounts.delete_account("alice", EVENT)
    assert await store.accounts.account("alice") is None
    assert [e["actor"] for e in await store.events.find(action="account.create")] == ["root"]


async def test_teams_members_and_their_cascade(store):
    await _user(store, "bob")
    await store.accounts.create_account("acme", "organization", None, True, False, EVENT)
    assert await store.accounts.create_team("acme", "devs", "developers", EVENT) is not None
    assert await store.accounts.create_team("acme", "devs", "again", EVENT) is None
    assert await store.accounts.create_team("bob", "devs", "a user has no teams", EVENT) is None
    assert await store.accounts.add_member("acme", "devs", "bob", EVENT)
    assert await store.accounts.add_member("acme", "devs", "bob", EVENT)  # twice: no change
    assert not await store.accounts.add_member("acme", "devs", "nobody", EVENT)
    assert [m.name for m in await store.accounts.members("acme", "devs")] == ["bob"]
    assert await store.accounts.is_member("acme", "devs", "bob")
    assert [o.name for o in await store.accounts.organizations_of("bob")] == ["acme"]
    renamed = await store.accounts.update_team("acme", "devs", EVENT, new_name="builders", description="d")
    assert renamed is not None and renamed.name == "builders" and renamed.description == "d"
    assert await store.accounts.grant_namespace("acme", "acme", "builders", "read-write", EVENT)
    assert await store.accounts.remove_member("acme", "builders", "bob", EVENT)
    assert not await store.accounts.remove_member("acme", "builders", "bob", EVENT)
    await store.accounts.add_member("acme", "builders", "bob", EVENT)
    assert await store.accounts.delete_team("acme", "builders", EVENT)
    assert await store.accounts.organizations_of("bob") == []
    assert await store.accounts.namespace_grants("acme") == []
    await store.accounts.create_team("acme", "ops", "", EVENT)
    await store.accounts.add_member("acme", "ops", "bob", EVENT)
    assert await store.accounts.delete_account("acme", EVENT)
    assert await store.accounts.teams("acme") == [] and await store.accounts.organizations_of("bob") == []


async def test_who_may_read_and_write_what(store):
    for name in ("owner", "dev", "reader", "outsider", "solo"):
        await _user(store, name)
    await _user(store, "root", admin=True)
    await store.accounts.create_account("acme", "organization", None, True, False, EVENT)
    await store.accounts.add_member("acme", "owners", "owner", EVENT)
    await store.accounts.create_team("acme", "devs", "", EVENT)
    await store.accounts.create_team("acme", "readers", "", EVENT)
    await store.accounts.add_member("acme", "devs", "dev", EVENT)
    await store.accounts.add_member("acme", "readers", "reader", EVENT)
    await store.accounts.grant_namespace("acme", "acme", "devs", "read-write", EVENT)
    for repository in ("acme/app", "acme/site", "solo/tool"):
        await _image(store, repository, repository)
    assert await store.accounts.grant_repository("acme/app", "acme", "readers", "read-only", EVENT)
    assert not await store.accounts.grant_repository("acme/none", "acme", "readers", "read-only", EVENT)
    access = AccessService(store.accounts)

    async def level(user: str | None, repository: str) -> Level:
        if user is None:
            return await access.level(Caller.anonymous(), repository)
        account = await store.accounts.account(user)
        return await access.level(Caller.account(user, account.admin), repository)

    assert await level("owner", "acme/app") == Level.ADMIN
    assert await level("dev", "acme/app") == Level.WRITE
    assert await level("dev", "acme/new") == Level.WRITE  # a push may create it
    assert await level("reader", "acme/app") == Level.READ
    assert await level("reader", "acme/site") == Level.NONE
    assert await level("outsider", "acme/app") == Level.NONE
    assert await level("solo", "solo/tool") == Level.ADMIN
    assert await level("solo", "solo/new/deeper") == Level.ADMIN
    assert await level("solo", "solo") == Level.NONE  # a one-part name is in no namespace
    assert await level("root", "anything/at-all") == Level.ADMIN
    assert await level(None, "acme/app") == Level.NONE
    listed = await store.accounts.repositories("reader", False, None, 0, 10)
    assert [r.name for r in listed] == ["acme/app"]
    assert [r.name for r in await store.accounts.repositories("dev", False, None, 0, 10)] == [
        "acme/app",
        "acme/site",
    ]
    assert [r.name for r in await store.accounts.repositories(None, True, "acme", 0, 10)] == [
        "acme/app",
        "acme/site",
    ]
    assert await store.accounts.readable("outsider", ["acme/app", "solo/tool"]) == set()
    public = await store.accounts.update_repository("acme/site", EVENT, visibility="public")
    assert public is not None and public.visibility == "public"
    assert await level(None, "acme/site") == Level.READ
    assert await level("outsider", "acme/site") == Level.READ
    assert await store.accounts.readable(None, ["acme/app", "acme/site"]) == {"acme/site"}
    grants = await store.accounts.team_grants("acme", "readers")
    assert [(g.target, g.level) for g in grants] == [("acme/app", "read-only")]
    assert await store.accounts.revoke_repository("acme/app", "acme", "readers", EVENT)
    assert await level("reader", "acme/app") == Level.NONE


async def test_repositories_are_created_private_with_their_details(store):
    created = await store.accounts.create_repository("acme/app", "public", "short", "long", EVENT)
    assert created is not None and (created.visibility, created.short_description) == ("public", "short")
    assert await store.accounts.create_repository("acme/app", "private", "", "", EVENT) is None
    await _image(store, "acme/pushed", "m")
    pushed = await store.accounts.repository("acme/pushed")
    assert pushed is not None and pushed.visibility == "private"


async def test_personal_access_tokens_work_until_revoked_or_expired(store):
    await _user(store, "ci")
    now = datetime.now(UTC)
    token = await store.accounts.create_token("ci", "build", "a" * 64, now + timedelta(days=1), EVENT)
    old = await store.accounts.create_token("ci", "old", "b" * 64, now - timedelta(seconds=1), EVENT)
    assert token is not None and old is not None
    assert await store.accounts.create_token("nobody", "x", "c" * 64, None, EVENT) is None
    found = await store.accounts.token_owner("a" * 64, now)
    assert found is not None and found[1].name == "ci" and found[0].name == "build"
    assert await store.accounts.token_owner("b" * 64, now) is None
    assert [t.name for t in await store.accounts.tokens("ci")] == ["build", "old"]
    assert (await store.accounts.tokens("ci"))[0].last_used_at is not None
    assert not await store.accounts.revoke_token("other", token.id, EVENT)
    assert await store.accounts.revoke_token("ci", token.id, EVENT)
    assert await store.accounts.token_owner("a" * 64, now) is None


async def test_every_replica_signs_with_the_first_key_stored(store):
    first = await store.accounts.signing_key(lambda: "KEY-1")
    assert first == "KEY-1"
    assert await store.accounts.signing_key(lambda: "KEY-2") == "KEY-1"
