"""Distribution's auth.token on a real server: the tokens of an existing token server are
trusted when a key of its certificates (or its key set) signed them, by kid or by an x5c chain
up to a root; they grant exactly their access claim; anything else is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from wharf.services.token_trust import thumbprint
from wharf.services.tokens import key_id

from .oci import Image, error_codes, push_image
from .server import WharfServer

REALM = "https://auth.example.com/token"


def certificate(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None
) -> x509.Certificate:
    """A certificate for ``key``, self-signed or signed by ``issuer`` (its name and key)."""
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer or (name, key)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def der64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def claims(*access: tuple[str, str, list[str]], **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    found = {
        "iss": "acme",
        "sub": "ci-bot",
        "aud": "registry",
        "exp": now + 300,
        "nbf": now - 5,
        "iat": now,
        "jti": "j",
        "access": [{"type": t, "name": n, "actions": a} for t, n, a in access],
    }
    return {**found, **changes}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ROOT_KEY = ec.generate_private_key(ec.SECP256R1())
ROOT = certificate("acme token signing root", ROOT_KEY)
PUSH = ("repository", "lib/app", ["pull", "push"])


@pytest.fixture
def server(make_server: Any, tmp_path: Path) -> WharfServer:
    bundle = tmp_path / "certs.pem"
    bundle.write_bytes(ROOT.public_bytes(serialization.Encoding.PEM))
    token = {"realm": REALM, "service": "registry", "issuer": "acme", "rootcertbundle": str(bundle)}
    instance: WharfServer = make_server({"auth": {"token": token}})
    return instance


def test_tokens_of_the_trusted_server_grant_exactly_their_access(server: WharfServer):
    kid = key_id(ROOT_KEY.public_key())
    token = jwt.encode(claims(PUSH), ROOT_KEY, algorithm="ES256", headers={"kid": kid})
    image = Image.random()
    with httpx.Client(base_url=server.url) as client:
        anonymous = client.get("/v2/")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == f'Bearer realm="{REALM}",service="registry"'
        with httpx.Client(base_url=server.url, headers=bearer(token)) as bot:
            assert bot.get("/v2/").status_code == 200
            push_image(bot, "lib/app", image, "v1")
            assert bot.get("/v2/lib/app/manifests/v1").content == image.manifest
            other = bot.get("/v2/lib/other/tags/list")
            assert other.status_code == 401 and error_codes(other) == ["UNAUTHORIZED"]
            assert other.headers["www-authenticate"] == (
                f'Bearer realm="{REALM}",service="registry",scope="repository:lib/other:pull"'
            )
            refused = bot.delete("/v2/lib/app/manifests/v1")
            assert refused.status_code == 401
        # The key's RFC 7638 thumbprint names it too.
        by_thumbprint = jwt.encode(
            claims(PUSH), ROOT_KEY, algorithm="ES256", headers={"kid": thumbprint(ROOT_KEY.public_key())}
        )
        assert client.get("/v2/lib/app/tags/list", headers=bearer(by_thumbprint)).json()["tags"] == ["v1"]
        # The server's catalog scope lists every repository: the token server decided.
        listing = jwt.encode(
            claims(("registry", "catalog", ["*"])), ROOT_KEY, algorithm="ES256", headers={"kid": kid}
        )
        assert client.get("/v2/_catalog", headers=bearer(listing)).json()["repositories"] == ["lib/app"]
        assert client.get("/v2/_catalog", headers=bearer(token)).status_code == 401


def test_a_certificate_chain_up_to_a_root_is_trusted_and_others_are_not(server: WharfServer):
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate("acme token server", leaf_key, ("acme token signing root", ROOT_KEY))
    chained = jwt.encode(claims(PUSH), leaf_key, algorithm="ES256", headers={"x5c": [der64(leaf)]})
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = certificate("acme token signing root", stranger_key)  # same name, another key
    other_leaf = certificate("acme token server", leaf_key, ("acme token signing root", stranger_key))
    kid = key_id(ROOT_KEY.public_key())
    forged = {
        "self-signed stranger": jwt.encode(
            claims(PUSH), stranger_key, algorithm="ES256", headers={"x5c": [der64(stranger)]}
        ),
        "leaf of a stranger, with it": jwt.encode(
            claims(PUSH), leaf_key, algorithm="ES256", headers={"x5c": [der64(other_leaf), der64(stranger)]}
        ),
        "a root's kid, another key": jwt.encode(
            claims(PUSH), stranger_key, algorithm="ES256", headers={"kid": kid}
        ),
        "unknown kid": jwt.encode(claims(PUSH), ROOT_KEY, algorithm="ES256", headers={"kid": "nobody"}),
        "alg none": jwt.encode(claims(PUSH), None, algorithm="none", headers={"kid": kid}),
        "wrong iss": jwt.encode(claims(PUSH, iss="evil"), ROOT_KEY, algorithm="ES256", headers={"kid": kid}),
        "wrong aud": jwt.encode(claims(PUSH, aud="other"), ROOT_KEY, algorithm="ES256", headers={"kid": kid}),
        "expired": jwt.encode(
            claims(PUSH, exp=int(time.time()) - 60), ROOT_KEY, algorithm="ES256", headers={"kid": kid}
        ),
    }
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/v2/lib/app/tags/list", headers=bearer(chained)).status_code == 404  # no such repo
        for what, token in forged.items():
            answer = client.get("/v2/lib/app/tags/list", headers=bearer(token))
            assert answer.status_code == 401, (what, answer.text)


def test_a_json_web_key_set_names_its_keys(make_server: Any, tmp_path: Path):
    key = rsa.generate_private_key(65537, 2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [{**jwk, "kid": "2026-12", "use": "sig"}]}))
    token = {"realm": REALM, "service": "registry", "issuer": "acme", "jwks": str(tmp_path / "keys.json")}
    server = make_server({"auth": {"token": token}})
    signed = jwt.encode(claims(PUSH), key, algorithm="RS256", headers={"kid": "2026-12"})
    with httpx.Client(base_url=server.url, headers=bearer(signed)) as bot:
        push_image(bot, "lib/app", Image.random(), "v1")
        assert bot.get("/v2/lib/app/tags/list").json()["tags"] == ["v1"]
    # HMAC with the public key as its secret (algorithm confusion): refused.
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    head = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "2026-12"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims(PUSH)).encode()).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(public, head + b"." + body, hashlib.sha256).digest()).rstrip(b"=")
    confused = b".".join([head, body, mac]).decode()
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/v2/lib/app/tags/list", headers=bearer(confused)).status_code == 401
