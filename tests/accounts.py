"""Accounts for tests of servers with auth on: made through the services, on the server's own
database (what `wharf user add` and the admin API do too)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from wharf.meta.sql import SQLMetadataStore
from wharf.services.access import AccessService
from wharf.services.accounts import AccountService
from wharf.services.caller import Caller

ACCOUNTS: dict[str, Any] = {"auth": {"accounts": {"enabled": True}}}
ROOT = Caller.local("test-setup")


def _run(database_url: str, work: Any) -> Any:
    async def go() -> Any:
        store = SQLMetadataStore(database_url)
        try:
            return await work(store, AccountService(store.accounts, AccessService(store.accounts)))
        finally:
            await store.close()

    return asyncio.run(go())


def add_user(database_url: str, name: str, password: str, admin: bool = False) -> None:
    async def work(_store: SQLMetadataStore, service: AccountService) -> None:
        await service.create(ROOT, "user", name, password, admin=admin)

    _run(database_url, work)


def add_token(
    database_url: str, user: str, label: str = "ci", expires: timedelta | None = None
) -> tuple[str, str]:
    """A personal access token for ``user``: (its id, its secret)."""

    async def work(_store: SQLMetadataStore, service: AccountService) -> tuple[str, str]:
        token, secret = await service.create_token(ROOT, user, label, expires)
        return token.id, secret

    result: tuple[str, str] = _run(database_url, work)
    return result


def store_call(database_url: str, call: Any) -> Any:
    """``call(store)`` on the server's metadata store: granting access, making teams."""

    async def work(store: SQLMetadataStore, _service: AccountService) -> Any:
        return await call(store)

    return _run(database_url, work)
