"""Telling callers apart: HTTP Basic with a password or a personal access token, anonymous
callers, the challenge of a 401, and the protected mode of a registry without auth."""

from __future__ import annotations

import base64

import pytest

from wharf.services.access import Refused
from wharf.services.authn import Authenticator, is_loopback, parse_authorization

from .accounts import ACCOUNTS, add_token, add_user, store_call
from .meta import EVENT


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_authorization_headers_are_read_or_refused_by_name():
    assert parse_authorization(None) is None
    found = parse_authorization(basic("alice", "pa:ss word"))
    assert found is not None and (found.scheme, found.user, found.secret) == ("basic", "alice", "pa:ss word")
    bearer = parse_authorization("Bearer abc.def.ghi")
    assert bearer is not None and (bearer.scheme, bearer.secret) == ("bearer", "abc.def.ghi")
    for bad, said in [
        ("Basic !!!", "base64"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "user:password"),
        ("Digest x", "'digest'"),
    ]:
        with pytest.raises(Refused, match=said) as refused:
            parse_authorization(bad)
        assert refused.value.status == 401


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        *[("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True), (None, True)],
        *[("10.0.0.5", False), ("192.168.1.2", False), ("2001:db8::1", False), ("::ffff:10.0.0.1", False)],
        ("not-an-address", False),
    ],
)
def test_the_protected_mode_serves_only_loopback_clients(peer, loopback):
    assert is_loopback(peer) is loopback
    refusal = Authenticator("none").protected_refusal(peer)
    assert (refusal is None) is loopback
    if refusal is not None:
        assert "auth.accounts.enabled" in refusal and "auth.open: true" in refusal
    assert Authenticator("none", open_to_all=True).protected_refusal(peer) is None


def test_basic_credentials_prove_a_user_and_nothing_else(make_server):
    server = make_server(ACCOUNTS)
    add_user(server.database_url, "alice", "correct horse")
    token_id, secret = add_token(server.database_url, "alice")
    with server.client() as client:
        anonymous = client.get("/v2/")
        assert anonymous.status_code == 401
        realm = f"{server.url}/auth/token"
        assert anonymous.headers["www-authenticate"] == f'Bearer realm="{realm}",service="wharf"'
        assert anonymous.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert (
            client.get("/v2/", headers={"Authorization": basic("alice", "correct horse")}).status_code == 200
        )
        assert client.get("/v2/", headers={"Authorization": basic("alice", secret)}).status_code == 200
        for user, password in [("alice", "wrong horse"), ("bob", "correct horse"), ("bob", secret)]:
            refused = client.get("/v2/", headers={"Authorization": basic(user, password)})
            assert refused.status_code == 401, (user, password)
            assert refused.headers["www-authenticate"] == f'Bearer realm="{realm}",service="wharf"'
        api = client.get("/api/v0/jobs", headers={"Authorization": basic("alice", "wrong horse")})
        assert api.status_code == 401 and api.headers["www-authenticate"] == 'Basic realm="wharf"'

        async def revoke(store):
            await store.accounts.revoke_token("alice", token_id, EVENT)

        store_call(server.database_url, revoke)
        assert client.get("/v2/", headers={"Authorization": basic("alice", secret)}).status_code == 401

        async def deactivate(store):
            await store.accounts.update_account("alice", EVENT, active=False)

        store_call(server.database_url, deactivate)
        assert (
            client.get("/v2/", headers={"Authorization": basic("alice", "correct horse")}).status_code == 401
        )


def test_without_auth_every_loopback_client_is_served_as_before(make_server):
    server = make_server()
    with server.client() as client:
        assert client.get("/v2/").status_code == 200
        assert client.get("/v2/", headers={"Authorization": basic("anyone", "anything")}).status_code == 200
