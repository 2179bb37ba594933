"""Accounts: users and organizations, their passwords and personal access tokens.

The rules of who may manage whom are here (a system administrator manages every account; a
user their own password and tokens); the names follow DTR's namespace rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from ..errors import INVALID_NAME, INVALID_PASSWORD, NAME_TAKEN, NO_SUCH_ACCOUNT, NO_SUCH_TOKEN, RegistryError
from ..meta.accounts import Account, AccountStore, Kind, PersonalToken
from ..meta.events import Event
from .access import AccessService
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


def _hashed(password: str) -> str:
    try:
        return hash_password(password)
    except PasswordTooShort as error:
        raise RegistryError(INVALID_PASSWORD, None, str(error)) from None


class AccountService:
    def __init__(self, accounts: AccountStore, access: AccessService) -> None:
        self._accounts = accounts
        self._access = access
        self._verifier = Verifier(ttl=0)

    async def get(self, caller: Caller, name: str) -> Account:
        found = await self._accounts.account(name)
        if found is None:
            raise RegistryError(NO_SUCH_ACCOUNT, {"name": name}, f"no account named {name!r}")
        return found

    async def accounts(self, caller: Caller, start: int, limit: int) -> list[Account]:
        self._access.require_user(caller, "list accounts")
        return await self._accounts.accounts(start, limit)

    async def create(
        self,
        caller: Caller,
        kind: Kind,
        name: str,
        password: str | None = None,
        admin: bool = False,
        active: bool = True,
    ) -> Account:
        """A system administrator's: a user (with their password) or an organization."""
        self._access.require_admin(caller, "create accounts")
        check_name(name)
        password_hash = _hashed(password or "") if kind == "user" else None
        event = Event(caller.name, f"{kind}.create", detail={"name": name, "admin": admin})
        created = await self._accounts.create_account(name, kind, password_hash, active, admin, event)
        if created is None:
            raise RegistryError(NAME_TAKEN, {"name": name}, f"an account named {name!r} exists already")
        return created

    async def set_password(self, caller: Caller, name: str, new: str, old: str | None = None) -> Account:
        """The user themselves (giving their old password) or a system administrator."""
        account = await self.get(caller, name)
        if not (caller.admin or caller.grant.unrestricted):
            if caller.user != name:
                self._access.require_admin(caller, f"change {name}'s password")
            if old is None or not await self._verifier.verify(account.password_hash, old):
                raise RegistryError(INVALID_PASSWORD, None, "the old password is wrong")
        event = Event(caller.name, "user.password", detail={"name": name})
        changed = await self._accounts.update_account(name, event, password_hash=_hashed(new))
        assert changed is not None
        return changed

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
        if not label.strip() or len(label) > 255:
            raise RegistryError(INVALID_NAME, {"name": label}, "a token's name must be 1 to 255 characters")
        secret = new_token_secret()
        expires_at = datetime.now(UTC) + expires if expires is not None else None
        event = Event(caller.name, "token.create", detail={"user": user, "name": label})
        created = await self._accounts.create_token(user, label, token_hash(secret), expires_at, event)
        if created is None:
            raise RegistryError(NO_SUCH_ACCOUNT, {"name": user}, f"no user named {user!r}")
        return created, secret

    async def tokens(self, caller: Caller, user: str) -> list[PersonalToken]:
        self._require_self_or_admin(caller, user, f"list {user}'s tokens")
        return await self._accounts.tokens(user)

    async def revoke_token(self, caller: Caller, user: str, token_id: str) -> None:
        self._require_self_or_admin(caller, user, f"revoke {user}'s tokens")
        event = Event(caller.name, "token.revoke", detail={"user": user})
        if not await self._accounts.revoke_token(user, token_id, event):
            raise RegistryError(NO_SUCH_TOKEN, {"id": token_id}, f"{user} has no token {token_id!r}")
