"""Wharf's token server (/auth/token) on a real server: tokens grant what was asked as far as
the account may, verify on /v2 without the database, refresh while the login still holds, and
every token this registry did not issue as it stands is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wharf.config import ConfigError, load_settings
from wharf.services.tokens import generate_pem, key_id, load_signing_key, parse_scopes
from wharf.wiring import check_auth

from .accounts import ACCOUNTS, add_token, add_user
from .dtr import ROOT, login, users
from .oci import Image, error_codes, push_image
from .server import WharfServer, deep_merge

BOB, CAROL = login("bob"), login("carol")


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def signing_key(tmp_path: Path) -> str:
    """A PEM the server is configured to sign with, so that tests can forge with it."""
    pem = generate_pem()
    (tmp_path / "signing.pem").write_text(pem)
    return pem


@pytest.fixture
def server(make_server: Any, tmp_path: Path, signing_key: str) -> Iterator[WharfServer]:
    config = deep_merge(ACCOUNTS, {"auth": {"accounts": {"signingkey": str(tmp_path / "signing.pem")}}})
    instance: WharfServer = make_server(config)
    users(instance, "bob", "carol")
    add_user(instance.database_url, *ROOT, admin=True)
    yield instance


def token(client: httpx.Client, *scopes: str, who: tuple[str, str] | None = None, **params: str) -> Any:
    answer = client.get("/auth/token", params={"service": "wharf", "scope": list(scopes), **params}, auth=who)
    assert answer.status_code == 200, answer.text
    return answer.json()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def claims(value: str) -> dict[str, Any]:
    found: dict[str, Any] = jwt.decode(value, options={"verify_signature": False})
    return found


# Pure functions


def test_scopes_split_at_the_first_and_last_colon_and_merge_what_one_parameter_holds():
    found = parse_scopes(["repository:lib/app:pull,push", "repository(plugin):a/b:pull registry:catalog:*"])
    assert [(s.type, s.name, s.actions) for s in found] == [
        ("repository", "lib/app", ("pull", "push")),
        ("repository", "a/b", ("pull",)),
        ("registry", "catalog", ("*",)),
    ]
    assert parse_scopes([""]) == []
    for bad in ["repository", "repository:app", ":app:pull", "repository::pull"]:
        with pytest.raises(Exception, match="is not type:name:actions") as refused:
            parse_scopes([bad])
        assert getattr(refused.value, "status", None) == 400


def test_signing_keys_are_es256_or_rs256_with_a_libtrust_key_id():
    es = load_signing_key(generate_pem(), "here")
    assert es.algorithm == "ES256"
    parts = es.kid.split(":")
    assert len(parts) == 12 and all((len(p) == 4 and p.isupper()) or p.isdigit() for p in parts)
    assert key_id(es.public) == es.kid
    assert load_signing_key(_pem(rsa.generate_private_key(65537, 2048)), "here").algorithm == "RS256"
    for pem, said in [
        (_pem(ec.generate_private_key(ec.SECP384R1())), "P-256"),
        (_pem(rsa.generate_private_key(65537, 1024)), "at least 2048 bits"),
        ("not a key", "not a PEM private key"),
    ]:
        with pytest.raises(ValueError, match=said) as refused:
            load_signing_key(pem, "auth.accounts.signingkey (k.pem)")
        assert "auth.accounts.signingkey (k.pem)" in str(refused.value)


def test_a_signing_key_that_cannot_sign_is_refused_at_start_up_naming_the_key(tmp_path: Path):
    bad = tmp_path / "bad.pem"
    bad.write_text(_pem(ec.generate_private_key(ec.SECP384R1())))
    for path, said in [(bad, "P-256"), (tmp_path / "missing.pem", "cannot read")]:
        config = tmp_path / "config.yml"
        config.write_text(f"auth:\n  accounts:\n    enabled: true\n    signingkey: {path}\n")
        with pytest.raises(ConfigError, match=said) as refused:
            check_auth(load_settings(str(config)))
        assert "auth.accounts.signingkey" in str(refused.value) and str(path) in str(refused.value)


# The token endpoint


def test_a_token_grants_what_was_asked_as_far_as_the_account_may(server: WharfServer, signing_key: str):
    image = Image.random()
    with server.client() as client:
        issued = token(client, "repository:bob/app:pull,push", who=BOB, account="bob")
        assert issued["token"] == issued["access_token"] and issued["expires_in"] == 300
        assert "refresh_token" not in issued
        header = jwt.get_unverified_header(issued["token"])
        assert header["alg"] == "ES256" and header["kid"] == load_signing_key(signing_key, "k").kid
        found = claims(issued["token"])
        assert (found["iss"], found["sub"], found["aud"]) == ("wharf", "bob", "wharf")
        assert found["exp"] - found["iat"] == 300 and found["nbf"] <= found["iat"] and found["jti"]
        assert found["access"] == [{"type": "repository", "name": "bob/app", "actions": ["pull", "push"]}]

        with httpx.Client(base_url=server.url, headers=bearer(issued["token"])) as bob:
            push_image(bob, "bob/app", image, "v1")
            assert bob.get("/v2/bob/app/manifests/v1").status_code == 200
            assert bob.get("/v2/").status_code == 200
            # A token for one repository is refused on another, even one bob may push to:
            # 401 with the challenge naming the scope a new token needs.
            other = bob.get("/v2/bob/other/tags/list")
            assert other.status_code == 401 and error_codes(other) == ["UNAUTHORIZED"]
            assert other.headers["www-authenticate"] == (
                f'Bearer realm="{server.url}/auth/token",service="wharf",scope="repository:bob/other:pull"'
            )

        # Carol may not read bob's private repository: a partial grant (none), not an error,
        # and the token is refused with 403 (a new token would not help).
        partial = token(client, "repository:bob/app:pull,push,delete", "repository:carol/x:pull", who=CAROL)
        assert claims(partial["token"])["access"] == [
            {"type": "repository", "name": "bob/app", "actions": []},
            {"type": "repository", "name": "carol/x", "actions": ["pull"]},
        ]
        refused = client.get("/v2/bob/app/manifests/v1", headers=bearer(partial["token"]))
        assert refused.status_code == 403 and error_codes(refused) == ["DENIED"]

        # Anonymous: no credentials, a token of no one, pulling public repositories only.
        anonymous = token(client, "repository:bob/app:pull")
        assert claims(anonymous["token"])["sub"] == ""
        assert claims(anonymous["token"])["access"][0]["actions"] == []
        assert client.patch(
            "/api/v0/repositories/bob/app", json={"visibility": "public"}, auth=BOB
        ).is_success
        anonymous = token(client, "repository:bob/app:pull,push")
        assert claims(anonymous["token"])["access"][0]["actions"] == ["pull"]
        # "*" asks for every action: all of them to an administrator of the repository, as
        # many as the caller may do to anyone else.
        owner = token(client, "repository:bob/app:*", who=BOB)
        assert claims(owner["token"])["access"][0]["actions"] == ["*"]
        reader = token(client, "repository:bob/app:*", who=CAROL)
        assert claims(reader["token"])["access"][0]["actions"] == ["pull"]
        # A token allows what it names: pull,push is no delete, even to the owner.
        pushing = token(client, "repository:bob/app:pull,push", who=BOB)["token"]
        undeleted = client.delete("/v2/bob/app/manifests/v1", headers=bearer(pushing))
        assert undeleted.status_code == 401
        assert 'scope="repository:bob/app:delete"' in undeleted.headers["www-authenticate"]
        assert client.get("/v2/bob/app/manifests/v1", headers=bearer(owner["token"])).status_code == 200
        pulled = client.get("/v2/bob/app/manifests/v1", headers=bearer(anonymous["token"]))
        assert pulled.status_code == 200 and pulled.content == image.manifest


def test_the_catalog_needs_the_catalog_scope(server: WharfServer):
    with server.client() as client:
        with httpx.Client(base_url=server.url, auth=BOB) as bob:
            push_image(bob, "bob/app", Image.random(), "v1")
        plain = token(client, "repository:bob/app:pull", who=BOB)
        refused = client.get("/v2/_catalog", headers=bearer(plain["token"]))
        assert (
            refused.status_code == 401 and 'scope="registry:catalog:*"' in refused.headers["www-authenticate"]
        )
        listed = token(client, "registry:catalog:*", who=BOB)
        assert claims(listed["token"])["access"] == [
            {"type": "registry", "name": "catalog", "actions": ["*"]}
        ]
        answer = client.get("/v2/_catalog", headers=bearer(listed["token"]))
        assert answer.status_code == 200 and answer.json()["repositories"] == ["bob/app"]
        carols = token(client, "registry:catalog:*", who=CAROL)
        assert client.get("/v2/_catalog", headers=bearer(carols["token"])).json()["repositories"] == []


def test_bad_token_requests_are_refused_clearly(server: WharfServer):
    with server.client() as client:
        wrong = client.get("/auth/token", params={"service": "wharf"}, auth=("bob", "wrong password"))
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == 'Basic realm="wharf"'
        assert "'bob'" in wrong.json()["errors"][0]["message"]
        other = client.get("/auth/token", params={"service": "elsewhere"}, auth=BOB)
        assert other.status_code == 400 and "'elsewhere'" in other.json()["errors"][0]["message"]
        scope = client.get("/auth/token", params={"service": "wharf", "scope": "repository:app"}, auth=BOB)
        assert scope.status_code == 400 and "'repository:app'" in scope.json()["errors"][0]["message"]
        account = client.get("/auth/token", params={"service": "wharf", "account": "carol"}, auth=BOB)
        assert account.status_code == 400 and "'carol'" in account.json()["errors"][0]["message"]
        grant = client.post("/auth/token", data={"grant_type": "client_credentials", "service": "wharf"})
        assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
        password = client.post(
            "/auth/token", data={"grant_type": "password", "username": "bob", "password": "nope"}
        )
        assert password.status_code == 400 and password.json()["error"] == "invalid_grant"


def test_the_oauth2_grants_and_refresh_tokens_that_end_with_their_login(server: WharfServer):
    with server.client() as client:
        answer = client.post(
            "/auth/token",
            data={
                "grant_type": "password",
                "username": "bob",
                "password": BOB[1],
                "service": "wharf",
                "client_id": "docker",
                "access_type": "offline",
                "scope": "repository:bob/app:pull repository:bob/app:push",
            },
        )
        assert answer.status_code == 200, answer.text
        issued = answer.json()
        assert issued["scope"] == "repository:bob/app:pull,push"
        refresh = issued["refresh_token"]
        # A refresh token is no access token.
        assert client.get("/v2/", headers=bearer(refresh)).status_code == 401

        def refreshed(value: str) -> httpx.Response:
            return client.post(
                "/auth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": value,
                    "scope": "repository:bob/app:pull",
                },
            )

        again = refreshed(refresh)
        assert again.status_code == 200, again.text
        # One form field per scope, as containers/image sends them with a refresh token.
        both = client.post(
            "/auth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "scope": ["repository:bob/app:pull,push", "repository:bob/src:pull"],
            },
        )
        assert claims(both.json()["access_token"])["access"] == [
            {"type": "repository", "name": "bob/app", "actions": ["pull", "push"]},
            {"type": "repository", "name": "bob/src", "actions": ["pull"]},
        ]
        assert claims(again.json()["access_token"])["sub"] == "bob"
        # docker login's way: GET with offline_token, then the refresh token from then on.
        offline = token(client, who=BOB, offline_token="true", account="bob")
        assert refreshed(offline["refresh_token"]).status_code == 200

        # A new password ends the refresh tokens of the old one.
        assert client.post(
            "/api/v0/accounts/bob/changePassword",
            json={"oldPassword": BOB[1], "newPassword": "a new long password"},
            auth=BOB,
        ).is_success
        ended = refreshed(refresh)
        assert ended.status_code == 400 and ended.json()["error"] == "invalid_grant"
        assert "log in again" in ended.json()["error_description"]

        # One got with a personal access token ends when the token is revoked.
        token_id, secret = add_token(server.database_url, "carol")
        carols = token(client, who=("carol", secret), offline_token="true")["refresh_token"]
        assert refreshed(carols).status_code == 200
        assert client.delete(f"/api/v0/accounts/carol/tokens/{token_id}", auth=CAROL).is_success
        assert refreshed(carols).status_code == 400


def test_tokens_this_registry_did_not_issue_as_they_stand_are_refused(server: WharfServer, signing_key: str):
    now = int(time.time())
    good = {
        "iss": "wharf",
        "sub": "bob",
        "aud": "wharf",
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "x",
        "access": [{"type": "repository", "name": "bob/app", "actions": ["pull"]}],
    }
    key = serialization.load_pem_private_key(signing_key.encode(), None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def signed(claims: dict[str, Any], **changes: Any) -> str:
        return jwt.encode({**claims, **changes}, key, algorithm="ES256")  # type: ignore[arg-type]

    valid = signed(good)
    header, _payload, signature = valid.split(".")
    # The same claims but another subject (the administrator), under bob's signature.
    as_root = jwt.utils.base64url_encode(json.dumps({**good, "sub": "root"}).encode()).decode()
    elsewhere = ec.generate_private_key(ec.SECP256R1())
    forged = {
        "alg none": jwt.encode(good, None, algorithm="none"),
        "HS256 with the public key as secret": _hs256(good, public),
        "wrong aud": signed(good, aud="another-registry"),
        "wrong iss": signed(good, iss="someone-else"),
        "expired": signed(good, exp=now - 60, iat=now - 400, nbf=now - 400),
        "not valid yet": signed(good, nbf=now + 3600, iat=now + 3600, exp=now + 3900),
        "tampered": f"{header}.{as_root}.{signature}",
        "another key": jwt.encode(good, elsewhere, algorithm="ES256"),
        "no exp": signed({k: v for k, v in good.items() if k != "exp"}),
        "not a JWT": "abc",
    }
    with server.client() as client:
        with httpx.Client(base_url=server.url, auth=BOB) as bob:
            push_image(bob, "bob/app", Image.random(), "v1")
        assert client.get("/v2/bob/app/tags/list", headers=bearer(valid)).status_code == 200
        for what, value in forged.items():
            answer = client.get("/v2/bob/app/tags/list", headers=bearer(value))
            assert answer.status_code == 401, what
            assert error_codes(answer) == ["UNAUTHORIZED"], what


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    """HS256 keyed with the public key: the algorithm confusion attack (PyJWT refuses to sign
    with a PEM as an HMAC secret, so the signature is made by hand)."""
    import base64
    import hashlib
    import hmac

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(mac)}"


def test_failed_logins_are_slowed_for_the_account_and_the_address(server: WharfServer):
    with server.client() as client:
        before = token(client, "repository:bob/app:pull", who=BOB)["token"]
        for _ in range(10):
            assert client.get("/auth/token", auth=("carol", "wrong password")).status_code == 401
        slowed = client.get("/auth/token", auth=CAROL)
        assert slowed.status_code == 429 and error_codes(slowed) == ["TOOMANYREQUESTS"]
        assert 1 <= int(slowed.headers["retry-after"]) <= 60
        # The same on /v2 with Basic, and on /api/v0: the address is paused too.
        assert client.get("/v2/", auth=BOB).status_code == 429
        assert client.get("/api/v0/accounts/bob", auth=BOB).status_code == 429
        # A token issued before keeps working: using it is no login.
        assert client.get("/v2/", headers=bearer(before)).status_code == 200


def test_tokens_are_no_credentials_for_the_admin_api(server: WharfServer):
    """A token grants actions on repositories: read as its whole account by the admin API, a
    leaked pull token would make personal access tokens."""
    with server.client() as client:
        pull = token(client, "repository:bob/app:pull", who=BOB)["token"]
        made = client.post("/api/v0/accounts/bob/tokens", json={"name": "stolen"}, headers=bearer(pull))
        assert made.status_code == 401 and error_codes(made) == ["UNAUTHORIZED"]
        assert "Basic" in made.json()["errors"][0]["message"]
        assert client.get("/api/v0/accounts/bob/tokens", auth=BOB).json() == {"tokens": []}


def test_an_administrators_token_without_the_scope_is_answered_401(server: WharfServer):
    """docker and podman fetch a new token after a 401, not after a 403: a system administrator
    may do everything, so a token of theirs lacking a scope asks for it."""
    with server.client() as client:
        with httpx.Client(base_url=server.url, auth=BOB) as bob:
            push_image(bob, "bob/app", Image.random(), "v1")
        narrow = token(client, "repository:bob/other:pull", who=ROOT)["token"]
        answer = client.get("/v2/bob/app/manifests/v1", headers=bearer(narrow))
        assert answer.status_code == 401, answer.text
        assert 'scope="repository:bob/app:pull"' in answer.headers["www-authenticate"]
