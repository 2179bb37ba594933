"""Wharf's token server: Docker's token authentication (distribution's docs/spec/auth).

A client challenged with ``Bearer realm=...,service=...,scope=...`` asks ``/auth/token`` for a
token (with its credentials, or none for anonymous access) and sends it on. A token is a JWT
signed with the registry's one key (ES256 for an EC P-256 key, RS256 for RSA), carrying
``iss``, ``sub``, ``aud``, ``exp``, ``nbf``, ``iat``, ``jti`` and ``access``: what was asked
for, intersected with what the account may do when it was issued. Verifying one needs no
database: the key is read once (or generated once and kept in the database, so that every
replica signs and verifies with the same one).

A token lives ``auth.accounts.tokenttl`` (5 minutes by default): a deactivated account or a
revoked personal access token keeps the tokens it already got that long, and no longer.
Refresh tokens (``offline_token=true``, docker's identity token) live ``REFRESH_TTL`` and
are checked against the account on every use: a deactivated account, a changed password or
a revoked personal access token ends them at once."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ..errors import TOKEN_REQUEST_INVALID, RegistryError
from ..meta.accounts import AccountStore
from .access import ALL, CATALOG, AccessService, Refused
from .authn import AccountsBasic, Login
from .caller import Caller
from .logins import LoginLimiter

REFRESH_TTL = timedelta(days=30)
# Clocks of replicas may disagree by this much.
LEEWAY = timedelta(seconds=10)
# Scopes one token request may ask for (each is a question to the metadata store).
MAX_SCOPES = 50
# Verified tokens remembered, so that a client sending the same token on every request pays
# the signature check once.
CACHE_SIZE = 4096

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class SigningKeyError(ValueError):
    pass


@dataclass(frozen=True)
class SigningKey:
    private: PrivateKey
    algorithm: str  # "ES256" or "RS256"
    kid: str

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()


def key_id(public: PublicKeyTypes) -> str:
    """The ``kid`` of a key, in libtrust's form (what Distribution's token servers write):
    the SHA-256 of the DER public key, its first 240 bits in base32, in groups of four."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


def load_signing_key(pem: str | bytes, where: str) -> SigningKey:
    """The key of a PEM private key; ``SigningKeyError`` naming ``where`` for one that cannot
    sign tokens."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise SigningKeyError(f"{where}: not a PEM private key without a passphrase ({error})") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            curve = key.curve.name
            raise SigningKeyError(f"{where}: an EC key must be on the P-256 curve (ES256), not {curve}")
        return SigningKey(key, "ES256", key_id(key.public_key()))
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise SigningKeyError(f"{where}: an RSA key must have at least 2048 bits, not {key.key_size}")
        return SigningKey(key, "RS256", key_id(key.public_key()))
    raise SigningKeyError(f"{where}: the key must be an EC P-256 (ES256) or RSA (RS256) private key")


def generate_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass(frozen=True)
class ScopeRequest:
    type: str  # "repository", "registry"
    name: str
    actions: tuple[str, ...]


def parse_scopes(values: Sequence[str]) -> list[ScopeRequest]:
    """The scopes of a token request: each ``scope`` parameter holds one or more (separated by
    spaces), each ``type:name:actions`` with the name between the first and the last colon and
    the actions separated by commas; a type's class (``repository(plugin)``) is dropped."""
    found: list[ScopeRequest] = []
    for value in values:
        for item in value.split():
            kind, first, rest = item.partition(":")
            name, last, actions = rest.rpartition(":")
            if not first or not last or not kind or not name:
                raise RegistryError(
                    TOKEN_REQUEST_INVALID,
                    {"scope": item},
                    f"scope {item!r} is not type:name:actions (e.g. repository:library/app:pull,push)",
                )
            kind = kind.split("(", 1)[0]
            found.append(ScopeRequest(kind, name, tuple(a for a in actions.split(",") if a)))
    if len(found) > MAX_SCOPES:
        message = f"{len(found)} scopes asked at once: at most {MAX_SCOPES}"
        raise RegistryError(TOKEN_REQUEST_INVALID, {"scopes": len(found)}, message)
    return found


def check_times(claims: dict[str, Any], now: float) -> None:
    """Refuse a token expired or not valid yet at ``now``: PyJWT checks exp and nbf against
    the system clock, and the clock here may be injected."""
    if claims["exp"] + LEEWAY.total_seconds() <= now:
        raise Refused(False, "the bearer token is not valid here: Signature has expired")
    if "nbf" in claims and claims["nbf"] - LEEWAY.total_seconds() > now:
        raise Refused(False, "the bearer token is not valid here: The token is not yet valid (nbf)")


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Issued:
    token: str
    expires_in: int  # seconds
    issued_at: str  # RFC 3339
    access: list[dict[str, Any]]

    @property
    def scope(self) -> str:
        """The grant in OAuth2's form: scopes separated by spaces."""
        granted = (e for e in self.access if e["actions"])
        return " ".join(f"{e['type']}:{e['name']}:{','.join(e['actions'])}" for e in granted)


class Tokens:
    """Signs and verifies Wharf's tokens with the registry's one key."""

    def __init__(
        self,
        accounts: AccountStore,
        *,
        service: str,
        issuer: str,
        ttl: timedelta,
        pem: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``pem``: the configured key (auth.accounts.signingkey's content); None: the one in
        the database."""
        self._accounts = accounts
        self.service = service
        self.issuer = issuer
        self.ttl = ttl
        self._clock = clock
        self._key = load_signing_key(pem, "auth.accounts.signingkey") if pem else None
        self._verified = Verified()

    @property
    def refresh_audience(self) -> str:
        # Not the access tokens' audience: a refresh token is refused as an access token.
        return f"{self.service}#refresh"

    async def key(self) -> SigningKey:
        if self._key is None:
            pem = await self._accounts.signing_key(generate_pem)
            self._key = load_signing_key(pem, "the token signing key kept in the database")
        return self._key

    async def sign(
        self, subject: str, audience: str, ttl: timedelta, claims: dict[str, Any]
    ) -> tuple[str, datetime]:
        key = await self.key()
        now = self._clock()
        payload = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": int((now + ttl).timestamp()),
            "nbf": int(now.timestamp()),
            "iat": int(now.timestamp()),
            "jti": secrets.token_urlsafe(16),
            **claims,
        }
        return jwt.encode(payload, key.private, algorithm=key.algorithm, headers={"kid": key.kid}), now

    async def access_token(self, subject: str, access: list[dict[str, Any]]) -> Issued:
        token, now = await self.sign(subject, self.service, self.ttl, {"access": access})
        return Issued(token, int(self.ttl.total_seconds()), _timestamp(now), access)

    async def decode(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a token this registry signed for ``audience``; ``Refused`` (401) for
        any other: another algorithm (``none``, HMAC), issuer or audience, an expired one or
        one not valid yet, a changed signature."""
        key = await self.key()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public,
                algorithms=[key.algorithm],
                audience=audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]},
            )
        except jwt.PyJWTError as error:
            raise Refused(False, f"the bearer token is not valid here: {error}") from None
        check_times(claims, self._clock().timestamp())
        return claims

    async def verify(self, token: str) -> Caller:
        """The caller an access token names, granted exactly its ``access``."""
        seen = self._verified.get(token, self._clock().timestamp())
        if seen is not None:
            return seen
        claims = await self.decode(token, self.service)
        caller = Caller.from_claims(claims)
        self._verified.keep(token, caller, claims["exp"] + LEEWAY.total_seconds())
        return caller


class Verified:
    """Tokens verified already and the callers they name, until they expire: a client sends
    the same token on every request, and pays for its signature check once."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._callers: dict[str, tuple[Caller, float]] = {}

    def get(self, token: str, now: float) -> Caller | None:
        seen = self._callers.get(token)
        return seen[0] if seen is not None and now < seen[1] else None

    def keep(self, token: str, caller: Caller, until: float) -> None:
        if len(self._callers) >= self._size:
            self._callers.clear()
        self._callers[token] = (caller, until)


class TokenServer:
    """What ``/auth/token`` answers: tokens granting what was asked, as far as it is allowed."""

    def __init__(
        self, tokens: Tokens, access: AccessService, basic: AccountsBasic, limiter: LoginLimiter
    ) -> None:
        self.tokens = tokens
        self._access = access
        self._basic = basic
        self._limiter = limiter

    async def login(self, user: str, password: str, peer: str | None) -> Login:
        """The account those credentials prove (``Refused``: they prove nothing;
        ``TooManyLogins``: too many failures lately)."""
        return await self._limiter.attempt(user, peer, lambda: self._basic.login(user, password))

    def check_service(self, service: str | None) -> None:
        if service and service != self.tokens.service:
            raise RegistryError(
                TOKEN_REQUEST_INVALID,
                {"service": service},
                f"this token server issues tokens for service {self.tokens.service!r}, not {service!r}",
            )

    async def grant(self, caller: Caller, scopes: Sequence[ScopeRequest]) -> list[dict[str, Any]]:
        """What of ``scopes`` the caller may do: one entry per scope asked (merged by
        resource), its actions only those allowed, possibly none."""
        merged: dict[tuple[str, str], dict[str, None]] = {}
        for scope in scopes:
            merged.setdefault((scope.type, scope.name), {}).update(dict.fromkeys(scope.actions))
        access = []
        for (kind, name), wanted in merged.items():
            asked = list(wanted)
            if kind == "repository":
                allowed = await self._access.granted(caller, name, asked)
            elif (kind, name) == CATALOG[:2]:
                # The catalog lists only what its caller may pull: anyone may ask for it.
                allowed = [ALL] if ALL in asked else []
            else:
                allowed = []
            access.append({"type": kind, "name": name, "actions": allowed})
        return access

    async def issue(self, caller: Caller, scopes: Sequence[ScopeRequest]) -> Issued:
        return await self.tokens.access_token(caller.user or "", await self.grant(caller, scopes))

    async def refresh_token(self, login: Login) -> str:
        token, _now = await self.tokens.sign(
            login.caller.name, self.tokens.refresh_audience, REFRESH_TTL, {"proof": login.proof}
        )
        return token

    async def refreshed(self, token: str) -> Login:
        """The login a refresh token carries, when its account and credential still hold."""
        claims = await self.tokens.decode(token, self.tokens.refresh_audience)
        user, proof = claims.get("sub"), claims.get("proof")
        if not isinstance(user, str) or not isinstance(proof, str):
            raise Refused(False, "the refresh token names no account")
        caller = await self._basic.still_valid(user, proof)
        if caller is None:
            raise Refused(False, f"the refresh token of {user!r} no longer holds: log in again")
        return Login(caller, proof)
