"""Who is calling: credentials in, a ``Caller`` out.

One ``Authenticator`` per process, chosen by the ``auth`` configuration:

- ``none`` (no auth section): everyone may do everything; clients not on a loopback address
  are refused unless ``auth.open`` (the protected mode, decided by ``protected_refusal``);
- ``accounts``: Wharf's own accounts. HTTP Basic with a password or a personal access token
  (each request reads the account, so a deactivated one or a revoked token stops at once);
  ``Bearer`` tokens from Wharf's token server, verified without the database;
- ``htpasswd``: Distribution's htpasswd file (services/htpasswd.py): HTTP Basic only, every
  user it knows allowed everything, no anonymous caller;
- ``token``: Distribution's external token server.

The HTTP layers read the ``Authorization`` header, hand it here, and put ``challenge``'s
answer on their 401s."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from ..meta.accounts import Account, AccountStore
from .access import Refused
from .caller import UNRESTRICTED, Caller
from .logins import LoginLimiter
from .passwords import Verifier, hash_password

# Personal access tokens start with this, so that a password is never looked up as one
# (and a leaked token is recognisable to secret scanners).
TOKEN_PREFIX = "wharf_pat_"


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(secret: str) -> str:
    """What the store keeps of a personal access token: a long random secret needs no slow
    hash, and a lookup by this is one index probe."""
    return hashlib.sha256(secret.encode()).hexdigest()


class BearerVerifier(Protocol):
    async def verify(self, token: str) -> Caller:
        """The caller a bearer token names, with its token's scopes; raise ``Refused`` (not
        known: 401) for a token that is not valid here."""


class BasicVerifier(Protocol):
    async def verify(self, user: str, password: str) -> Caller | None:
        """The caller those credentials prove, or None."""


@dataclass(frozen=True)
class Credentials:
    scheme: str  # "basic" or "bearer", lower case
    user: str  # Basic's user name; "" for a bearer token
    secret: str


def parse_authorization(header: str | None) -> Credentials | None:
    """The credentials of an ``Authorization`` header; None when there is none. Raises
    ``Refused`` for one that cannot be read."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Refused(False, "the Basic credentials are not base64 of user:password") from None
        user, colon, password = decoded.partition(":")
        if not colon:
            raise Refused(False, "the Basic credentials are not base64 of user:password")
        return Credentials("basic", user, password)
    if scheme == "bearer" and value:
        return Credentials("bearer", "", value)
    raise Refused(False, f"unsupported Authorization scheme {scheme!r}: use Basic or Bearer")


def is_loopback(peer: str | None) -> bool:
    """Whether a client address is on this machine (127.0.0.0/8, ::1, a Unix socket)."""
    if peer is None or peer == "":
        return True  # a Unix socket: only this machine reaches it
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


PROTECTED = (
    "Wharf has no authentication configured, so it serves only clients on this machine; "
    "turn on accounts (auth.accounts.enabled: true, then `wharf user add --admin NAME`) "
    "or set auth.open: true to serve everyone without authentication, accepting the risk"
)


@dataclass(frozen=True)
class Login:
    """An account that proved who it is, and what a refresh token remembers of how: ``pw:``
    and a digest of the password's hash (a new password ends it) or ``pat:`` and the personal
    access token's id (revoking the token ends it)."""

    caller: Caller
    proof: str


@functools.cache
def _unknown() -> str:
    """A hash no password matches (of a random one), checked for names that are no account."""
    return hash_password(secrets.token_urlsafe(16))


def _password_proof(password_hash: str | None) -> str:
    return "pw:" + hashlib.sha256((password_hash or "").encode()).hexdigest()[:32]


class AccountsBasic:
    """HTTP Basic against Wharf's accounts: a password (argon2id, verified once a minute at
    most per password thanks to ``Verifier``) or a personal access token."""

    def __init__(self, accounts: AccountStore, verifier: Verifier | None = None) -> None:
        self._accounts = accounts
        self._verifier = verifier or Verifier()

    async def verify(self, user: str, password: str) -> Caller | None:
        login = await self.login(user, password)
        return None if login is None else login.caller

    async def login(self, user: str, password: str) -> Login | None:
        account: Account | None
        if password.startswith(TOKEN_PREFIX):
            found = await self._accounts.token_owner(token_hash(password), datetime.now(UTC))
            if found is None or found[1].name != user:
                return None
            account, proof = found[1], f"pat:{found[0].id}"
        else:
            account = await self._accounts.account(user)
            # An unknown name costs what a wrong password does: the time of an answer does
            # not tell which names exist.
            stored = account.password_hash if account is not None else _unknown()
            if not await self._verifier.verify(stored, password) or account is None:
                return None
            proof = _password_proof(account.password_hash)
        if account.kind != "user" or not account.active:
            return None
        return Login(Caller.account(account.name, account.admin), proof)

    async def still_valid(self, user: str, proof: str) -> Caller | None:
        """The caller of a login made earlier with ``proof``, when the account is still active
        and the credential still holds."""
        account = await self._accounts.account(user)
        if account is None or account.kind != "user" or not account.active:
            return None
        if proof.startswith("pat:"):
            now = datetime.now(UTC)
            tokens = await self._accounts.tokens(user)
            if not any(
                str(t.id) == proof[4:] and (t.expires_at is None or t.expires_at > now) for t in tokens
            ):
                return None
        elif not secrets.compare_digest(proof, _password_proof(account.password_hash)):
            return None
        return Caller.account(account.name, account.admin)


class Authenticator:
    def __init__(
        self,
        method: str,
        basic: BasicVerifier | None = None,
        bearer: BearerVerifier | None = None,
        challenge: Callable[[str, str | None, str | None], str] | None = None,
        open_to_all: bool = False,
        realm: str = "wharf",
        anonymous: bool = True,
        limiter: LoginLimiter | None = None,
    ) -> None:
        """``challenge(base_url, scope, error)``: the ``WWW-Authenticate`` value of a /v2
        401 (``base_url``: the scheme and host the client used); ``realm``: the one of the
        Basic challenge of an /api/v0 401; ``anonymous``: whether a request without
        credentials is served as an anonymous caller (False: it is refused with a 401, as
        Distribution's htpasswd does)."""
        self.method = method
        self.realm = realm
        self._basic = basic
        self._bearer = bearer
        self._challenge = challenge
        self._open = open_to_all
        self._anonymous = anonymous
        self.limiter = limiter or LoginLimiter()

    @property
    def enforcing(self) -> bool:
        """Whether callers are told apart (False: everyone may do everything)."""
        return self.method != "none"

    def protected_refusal(self, peer: str | None) -> str | None:
        """Why a client at ``peer`` is refused by the protected mode, or None."""
        if self.method != "none" or self._open or is_loopback(peer):
            return None
        return PROTECTED

    async def caller(self, authorization: str | None, peer: str | None = None, bearer: bool = True) -> Caller:
        """The caller those credentials prove: anonymous when none came. Raises ``Refused``
        (401) for credentials that prove nothing, ``TooManyLogins`` (429) while failed
        logins for that user or from ``peer`` (the client's address) are paused."""
        if self.method == "none":
            return Caller.anonymous(UNRESTRICTED)
        credentials = parse_authorization(authorization)
        if credentials is None:
            if not self._anonymous:
                raise Refused(False, "authentication required")
            return Caller.anonymous()
        if credentials.scheme == "bearer":
            if not bearer:
                raise Refused(
                    False,
                    "the admin API takes HTTP Basic credentials (a password or a personal access "
                    "token), not bearer tokens",
                )
            if self._bearer is None:
                raise Refused(False, "bearer tokens are not accepted here: use Basic credentials")
            return await self._bearer.verify(credentials.secret)
        basic = self._basic
        if basic is None:
            raise Refused(False, "Basic credentials are not accepted here: use a bearer token")
        return await self.limiter.attempt(
            credentials.user, peer, lambda: basic.verify(credentials.user, credentials.secret)
        )

    def challenge(self, base_url: str, scope: str | None, error: str | None = None) -> str:
        if self._challenge is None:
            return self.basic_challenge
        return self._challenge(base_url, scope, error)

    @property
    def basic_challenge(self) -> str:
        """The ``WWW-Authenticate`` value of an /api/v0 401 (which takes HTTP Basic)."""
        return f'Basic realm="{self.realm}"'


def bearer_challenge(realm: str, service: str) -> Callable[[str, str | None, str | None], str]:
    """Docker's token challenge: ``realm`` empty means this server's own token endpoint."""

    def challenge(base_url: str, scope: str | None, error: str | None) -> str:
        where = realm or f"{base_url.rstrip('/')}/auth/token"
        parts = [f'realm="{where}"', f'service="{service}"']
        if scope:
            parts.append(f'scope="{scope}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    return challenge


def basic_challenge(realm: str) -> Callable[[str, str | None, str | None], str]:
    def challenge(_base_url: str, _scope: str | None, _error: str | None) -> str:
        return f'Basic realm="{realm}"'

    return challenge
