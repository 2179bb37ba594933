"""Accounts: users and organizations, their passwords and personal access tokens.

The rules of who may manage whom are here, as DTR's: any signed-in user sees the accounts;
a system administrator manages every account; a user their own password, organizations
and tokens. When Wharf's own accounts are on, anyone may sign up: the user is created
inactive, until an administrator activates it. The names follow DTR's namespace rule."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..config import parse_duration
from ..errors import (
    INVALID_DURATION,
    INVALID_NAME,
    INVALID_PASSWORD,
    INVALID_TEXT,
    NAME_TAKEN,
    NAME_UNKNOWN,
    NO_SUCH_ACCOUNT,
    NO_SUCH_TOKEN,
    RegistryError,
)
from ..meta.accounts import Account, AccountStore, Kind, PersonalToken, RepositoryInfo
from ..meta.events import Event
from ..reference import is_valid_name
from .access import AccessService, Level, is_admin
from .authn import new_token_secret, token_hash
from .caller import Caller
from .passwords import PasswordTooShort, Verifier, hash_password

# Lowercase letters and digits, then also '-' and '_' (DTR's namespace rule).
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,254}")


def check_name(name: str, what: str = "account") -> None:
    if not NAME.fullmatch(name):
        raise RegistryError(
            INVALID_NAME,
            {"name": name},
            f"{what} name {name!r} is invalid: lowercase letters and digits, and after the first "
            "character also '-' and '_', at most 255 characters",
        )


def is_name(name: str) -> bool:
    """Whether ``name`` can be an account's or a team's: a name that cannot be names nothing
    (and is never sent to the database: PostgreSQL cannot compare text holding a NUL)."""
    return NAME.fullmatch(name) is not None


def check_text(value: str, what: str, limit: int) -> str:
    """Text a person wrote (a description, a token's name): at most ``limit`` characters,
    encodable as UTF-8 and without NUL (which PostgreSQL cannot store)."""
    if len(value) > limit:
        raise RegistryError(
            INVALID_TEXT, {what: len(value)}, f"{what} is too long: at most {limit} characters"
        )
    if "\x00" in value or _unencodable(value):
        raise RegistryError(INVALID_TEXT, None, f"{what} holds a NUL or a lone surrogate, which is no text")
    return value


def _unencodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def _hashed(password: str) -> str:
    if "\x00" in password or _unencodable(password):
        raise RegistryError(INVALID_PASSWORD, None, "the password holds a NUL or a lone surrogate")
    try:
        return hash_password(password)
    except PasswordTooShort as error:
        raise RegistryError(INVALID_PASSWORD, None, str(error)) from None


def no_account(name: str, kind: str = "account") -> RegistryError:
    return RegistryError(NO_SUCH_ACCOUNT, {"name": name}, f"no {kind} named {name!r}")


def token_lifetime(text: str | None) -> timedelta | None:
    """A token's ``expiresIn`` ("30d", "12h", "1h30m"; None: it never expires)."""
    if text is None:
        return None
    try:
        lifetime = parse_duration(text)
    except ValueError as error:
        raise RegistryError(INVALID_DURATION, {"expiresIn": text[:100]}, f"expiresIn: {error}") from None
    if lifetime <= timedelta(0):
        raise RegistryError(
            INVALID_DURATION, {"expiresIn": text}, f"expiresIn {text!r} must be longer than 0"
        )
    return lifetime


@dataclass(frozen=True)
class UserAccess:
    """A user's level on a repository."""

    user: Account
    repository: RepositoryInfo
    level: Level


class AccountService:
    def __init__(self, accounts: AccountStore, access: AccessService, open_signup: bool = False) -> None:
        """``open_signup``: anyone may create a user, inactive until an administrator
        activates it (DTR's rule, when Wharf's own accounts are on)."""
        self._accounts = accounts
        self._access = access
        self._open_signup = open_signup
        self._verifier = Verifier(ttl=0)

    async def _find(self, name: str, kind: Kind | None = None) -> Account:
        found = await self._accounts.account(name) if is_name(name) else None
        if found is None or (kind is not None and found.kind != kind):
            raise no_account(name, kind or "account")
        return found

    async def get(self, caller: Caller, name: str) -> Account:
        self._access.require_user(caller, "see accounts")
        return await self._find(name)

    async def accounts(self, caller: Caller, start: int, limit: int) -> list[Account]:
        self._access.require_user(caller, "list accounts")
        return await self._accounts.accounts(start, limit)

    async def organizations(self, caller: Caller, user: str) -> list[Account]:
        """The organizations ``user`` is in: theirs to see, or an administrator's."""
        self._require_self_or_admin(caller, user, f"see {user}'s organizations")
        await self._find(user, "user")
        return await self._accounts.organizations_of(user)

    async def create(
        self,
        caller: Caller,
        kind: Kind,
        name: str,
        password: str | None = None,
        admin: bool = False,
        active: bool = True,
    ) -> Account:
        """A user (with their password) or an organization: a system administrator's to
        create; a user anyone's when sign-up is open (then inactive, and never an
        administrator)."""
        if not is_admin(caller):
            if kind != "user" or not self._open_signup:
                self._access.require_admin(caller, f"create {kind}s")
            if admin:
                self._access.require_admin(caller, "create administrators")
            active = False
        check_name(name)
        password_hash = _hashed(password or "") if kind == "user" else None
        event = Event(caller.name, f"{kind}.create", detail={"name": name, "admin": admin, "active": active})
        created = await self._accounts.create_account(name, kind, password_hash, active, admin, event)
        if created is None:
            raise RegistryError(NAME_TAKEN, {"name": name}, f"an account named {name!r} exists already")
        return created

    async def delete(self, caller: Caller, name: str) -> None:
        """A system administrator's; deleting an account that is not there changes nothing.
        Its teams, memberships and tokens go with it, its repositories stay."""
        self._access.require_admin(caller, "delete accounts")
        if is_name(name):
            await self._accounts.delete_account(
                name, Event(caller.name, "account.delete", detail={"name": name})
            )

    async def set_active(self, caller: Caller, name: str, active: bool) -> Account:
        what = "activate" if active else "deactivate"
        self._access.require_admin(caller, f"{what} accounts")
        await self._find(name)
        event = Event(caller.name, f"account.{what}", detail={"name": name})
        changed = await self._accounts.update_account(name, event, active=active)
        if changed is None:  # deleted in between
            raise no_account(name)
        return changed

    async def set_password(self, caller: Caller, name: str, new: str, old: str | None = None) -> Account:
        """The user themselves (giving their old password) or a system administrator."""
        self._require_self_or_admin(caller, name, f"change {name}'s password")
        account = await self._find(name, "user")
        if not is_admin(caller) and (
            old is None or _unencodable(old) or not await self._verifier.verify(account.password_hash, old)
        ):
            raise RegistryError(INVALID_PASSWORD, None, "the old password is wrong")
        event = Event(caller.name, "user.password", detail={"name": name})
        changed = await self._accounts.update_account(name, event, password_hash=_hashed(new))
        if changed is None:
            raise no_account(name, "user")
        return changed

    async def repository_access(self, caller: Caller, user: str, repository: str) -> UserAccess:
        """``user``'s level on ``repository``: theirs to ask, or an administrator's. A
        repository the asker cannot see is not known to them."""
        self._require_self_or_admin(caller, user, f"see {user}'s access")
        account = await self._find(user, "user")
        found = await self._accounts.repository(repository) if is_valid_name(repository) else None
        subject = Caller.account(account.name, account.admin)
        level = await self._access.level(subject, repository) if found is not None else Level.NONE
        if found is None or (level < Level.READ and not is_admin(caller)):
            raise RegistryError(
                NAME_UNKNOWN, {"name": repository}, f"repository name not known: {repository}"
            )
        if not account.active:
            level = Level.NONE  # an inactive account signs in nowhere
        return UserAccess(account, found, level)

    def _require_self_or_admin(self, caller: Caller, user: str, what: str) -> None:
        if caller.user == user and not caller.is_anonymous:
            return
        self._access.require_admin(caller, what)

    async def create_token(
        self, caller: Caller, user: str, label: str, expires: timedelta | None
    ) -> tuple[PersonalToken, str]:
        """A personal access token for ``user`` (themselves, or by an administrator), and its
        secret: shown this once, kept only as a hash."""
        self._require_self_or_admin(caller, user, f"create tokens for {user}")
        if not label.strip():
            raise RegistryError(INVALID_NAME, {"name": label}, "a token's name must be 1 to 255 characters")
        check_text(label, "a token's name", 255)
        await self._find(user, "user")
        secret = new_token_secret()
        expires_at = datetime.now(UTC) + expires if expires is not None else None
        event = Event(caller.name, "token.create", detail={"user": user, "name": label})
        created = await self._accounts.create_token(user, label, token_hash(secret), expires_at, event)
        if created is None:
            raise no_account(user, "user")
        return created, secret

    async def tokens(self, caller: Caller, user: str) -> list[PersonalToken]:
        self._require_self_or_admin(caller, user, f"list {user}'s tokens")
        await self._find(user, "user")
        return await self._accounts.tokens(user)

    async def revoke_token(self, caller: Caller, user: str, token_id: str) -> None:
        self._require_self_or_admin(caller, user, f"revoke {user}'s tokens")
        event = Event(caller.name, "token.revoke", detail={"user": user})
        if not (
            _TOKEN_ID.fullmatch(token_id)
            and is_name(user)
            and await self._accounts.revoke_token(user, token_id, event)
        ):
            raise RegistryError(NO_SUCH_TOKEN, {"id": token_id[:100]}, f"{user} has no token {token_id!r}")


# What a token's id looks like (a UUID): anything else names no token.
_TOKEN_ID = re.compile(r"[0-9a-f-]{36}")
