"""Distribution's ``auth.token``: trusting the tokens of an existing token server instead of
issuing them.

The token server's keys come from ``rootcertbundle`` (PEM certificates: each one's key is
trusted, and a token may also carry its own certificate chain in ``x5c`` up to one of them)
and from ``jwks`` (a JSON Web Key Set file). A token names its key by ``kid``: libtrust's
key id (what Distribution's token servers write) or the key's RFC 7638 thumbprint or, in a
key set, the key's own ``kid``. The algorithm comes from the key, never from the token
alone: ``none`` and HMAC are refused whatever the header says. A token grants exactly its
``access`` claim."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .access import Refused
from .caller import Caller
from .tokens import LEEWAY, Verified, check_times, key_id

Key = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# The longest certificate chain a token may carry.
MAX_CHAIN = 5


class TrustError(ValueError):
    pass


def algorithms_for(key: Key) -> list[str]:
    if isinstance(key, ec.EllipticCurvePublicKey):
        found = _CURVES.get(key.curve.name)
        return [found] if found else []
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    return ["EdDSA"]


def thumbprint(key: Key) -> str:
    """The key's RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
        members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    elif isinstance(key, rsa.RSAPublicKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
        members = {name: jwk[name] for name in ("e", "kty", "n")}
    else:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key))
        members = {name: jwk[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def _usable(key: object, where: str) -> Key:
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in _CURVES:
        raise TrustError(f"{where}: EC keys must be on P-256, P-384 or P-521, not {key.curve.name}")
    if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        return key
    raise TrustError(f"{where}: a {type(key).__name__} cannot verify tokens (EC, RSA or Ed25519 only)")


@dataclass
class TrustedKeys:
    keys: dict[str, Key]  # by every id a token may name it with
    roots: list[x509.Certificate]

    @classmethod
    def load(cls, rootcertbundle: str, jwks: str) -> TrustedKeys:
        """The keys of those files; ``TrustError`` naming the key and the file for one that
        cannot be read or holds nothing usable."""
        keys: dict[str, Key] = {}
        roots: list[x509.Certificate] = []
        if rootcertbundle:
            where = f"auth.token.rootcertbundle ({rootcertbundle})"
            try:
                roots = x509.load_pem_x509_certificates(_read(rootcertbundle, where))
            except ValueError as error:
                raise TrustError(f"{where}: not PEM certificates ({error})") from None
            for cert in roots:
                key = _usable(cert.public_key(), where)
                keys[key_id(key)] = keys[thumbprint(key)] = key
        if jwks:
            where = f"auth.token.jwks ({jwks})"
            try:
                found = jwt.PyJWKSet.from_json(_read(jwks, where).decode()).keys
            except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError, UnicodeDecodeError) as error:
                raise TrustError(f"{where}: not a JSON Web Key Set ({error})") from None
            for jwk in found:
                key = _usable(_public(jwk.key), where)
                keys[key_id(key)] = keys[thumbprint(key)] = key
                if jwk.key_id:
                    keys[jwk.key_id] = key
        if not keys:
            raise TrustError(
                "auth.token needs the token server's keys: set rootcertbundle (PEM certificates) "
                "or jwks (a JSON Web Key Set file)"
            )
        return cls(keys, roots)

    def key_of(self, header: dict[str, Any]) -> Key:
        """The trusted key a token's header names (by ``kid``, or by an ``x5c`` chain up to
        a root certificate)."""
        chain = header.get("x5c")
        if chain:
            return self._chained(chain)
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid]
        raise Refused(False, f"the bearer token names no trusted key (kid {kid!r})")

    def _chained(self, chain: Any) -> Key:
        if not isinstance(chain, list) or not 1 <= len(chain) <= MAX_CHAIN:
            raise Refused(False, "the bearer token's x5c is not a certificate chain")
        try:
            certs = [x509.load_der_x509_certificate(base64.b64decode(item)) for item in chain]
        except (ValueError, TypeError):
            raise Refused(False, "the bearer token's x5c is not a certificate chain") from None
        now = datetime.now(UTC)
        for cert in certs:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise Refused(
                    False, "a certificate of the bearer token's x5c has expired or is not valid yet"
                )
        current = certs[0]
        for issuer in [*certs[1:], None]:
            if any(current == root or _issued(current, root) for root in self.roots):
                return _usable(certs[0].public_key(), "the token's certificate")
            if issuer is None or not _issued(current, issuer):
                break
            current = issuer
        raise Refused(
            False, "the bearer token's x5c does not lead to a certificate of auth.token.rootcertbundle"
        )


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _public(key: Any) -> object:
    return key.public_key() if hasattr(key, "public_key") else key


def _read(path: str, where: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TrustError(f"{where}: cannot read it: {error.strerror}") from None


class TrustedTokens:
    """Verifies the tokens of the configured token server: its keys, its ``issuer``, this
    registry's ``service`` as the audience."""

    def __init__(
        self,
        keys: TrustedKeys,
        *,
        issuer: str,
        service: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._service = service
        self._clock = clock
        self._verified = Verified()

    async def verify(self, token: str) -> Caller:
        now = self._clock().timestamp()
        seen = self._verified.get(token, now)
        if seen is not None:
            return seen
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.key_of(header)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms_for(key),
                audience=self._service,
                issuer=self._issuer,
                leeway=LEEWAY,
                options={"require": ["iss", "aud", "exp"], "verify_sub": False},
            )
        except jwt.PyJWTError as error:
            raise Refused(False, f"the bearer token is not valid here: {error}") from None
        check_times(claims, now)
        caller = Caller.from_claims(claims, external=True)
        self._verified.keep(token, caller, claims["exp"] + LEEWAY.total_seconds())
        return caller
