"""Accounts (DTR's `/accounts`): users and organizations, passwords, activation, a user's
organizations and access, and personal access tokens."""

from __future__ import annotations

from typing import Annotated, Literal, cast

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from ..meta.accounts import Account, PersonalToken
from ..services.accounts import token_lifetime
from .deps import AsCaller, Services
from .jobs import iso
from .repositories import RepositoryOut, repository_out
from .responses import MAX_START, Responses, error

router = APIRouter(tags=["accounts"])

Start = Annotated[int, Query(ge=0, le=MAX_START, description="how many to skip")]
Limit = Annotated[int, Query(ge=1, le=1000, description="how many at most")]


class AccountOut(BaseModel):
    id: int
    type: Literal["user", "organization"]
    name: str
    isActive: bool
    isAdmin: bool | None = Field(default=None, description="a system administrator (users only)")


def account_out(account: Account) -> AccountOut:
    return AccountOut(
        id=account.id,
        type=account.kind,
        name=account.name,
        isActive=account.active,
        isAdmin=account.admin if account.kind == "user" else None,
    )


class AccountsOut(BaseModel):
    accounts: list[AccountOut]


class OrganizationsOut(BaseModel):
    organizations: list[AccountOut]


class NewAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["user", "organization"]
    name: str = Field(description="lowercase letters and digits, then also '-' and '_'")
    password: str | None = Field(default=None, description="users only: at least 8 characters")
    isAdmin: bool = Field(default=False, description="users only; only an administrator may make one")


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    oldPassword: str | None = Field(default=None, description="needed unless an administrator asks")
    newPassword: str = Field(description="at least 8 characters")


AccessLevel = Literal["none", "read-only", "read-write", "admin"]


class UserAccessOut(BaseModel):
    accessLevel: AccessLevel
    user: AccountOut
    repository: RepositoryOut


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="what the token is for (1 to 255 characters)")
    expiresIn: str | None = Field(default=None, description="a duration: 30d, 12h, 1h30m; none: never")


class TokenOut(BaseModel):
    id: str
    name: str
    createdAt: str
    expiresAt: str | None
    lastUsedAt: str | None


class NewTokenOut(BaseModel):
    id: str
    name: str
    createdAt: str
    expiresAt: str | None
    token: str = Field(description="the secret: shown this once, usable as the password in HTTP Basic")


class TokensOut(BaseModel):
    tokens: list[TokenOut]


def token_out(token: PersonalToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        createdAt=iso(token.created_at) or "",
        expiresAt=iso(token.expires_at),
        lastUsedAt=iso(token.last_used_at),
    )


NOT_FOUND: Responses = {404: error("No such account")}


@router.get(
    "/accounts", response_model=AccountsOut, response_model_exclude_none=True, summary="List accounts"
)
async def list_accounts(
    registry: Services, caller: AsCaller, start: Start = 0, limit: Limit = 100
) -> AccountsOut:
    """Users and organizations by name; for any signed-in user."""
    found = await registry.accounts.accounts(caller, start, limit)
    return AccountsOut(accounts=[account_out(account) for account in found])


@router.post(
    "/accounts",
    response_model=AccountOut,
    response_model_exclude_none=True,
    summary="Create a user or an organization",
)
async def create_account(registry: Services, caller: AsCaller, body: NewAccount) -> AccountOut:
    """An administrator creates users (active) and organizations. Anyone else may sign up as
    a user when Wharf's own accounts are on: the user is inactive until an administrator
    activates it. 400 when the name is invalid or taken, or the password too short."""
    created = await registry.accounts.create(caller, body.type, body.name, body.password, admin=body.isAdmin)
    return account_out(created)


@router.get(
    "/accounts/{name}",
    response_model=AccountOut,
    response_model_exclude_none=True,
    summary="One account",
    responses=NOT_FOUND,
)
async def get_account(registry: Services, caller: AsCaller, name: str) -> AccountOut:
    return account_out(await registry.accounts.get(caller, name))


@router.delete("/accounts/{name}", status_code=204, summary="Delete an account")
async def delete_account(registry: Services, caller: AsCaller, name: str) -> Response:
    """An administrator's; 204 also when there was no such account. Its teams, memberships and
    tokens go with it; its repositories stay."""
    await registry.accounts.delete(caller, name)
    return Response(status_code=204)


@router.get(
    "/accounts/{name}/organizations",
    response_model=OrganizationsOut,
    response_model_exclude_none=True,
    summary="The organizations a user is in",
    responses=NOT_FOUND,
)
async def organizations(registry: Services, caller: AsCaller, name: str) -> OrganizationsOut:
    found = await registry.accounts.organizations(caller, name)
    return OrganizationsOut(organizations=[account_out(account) for account in found])


@router.post(
    "/accounts/{name}/changePassword",
    response_model=AccountOut,
    response_model_exclude_none=True,
    summary="Change a user's password",
    responses=NOT_FOUND,
)
async def change_password(
    registry: Services, caller: AsCaller, name: str, body: PasswordChange
) -> AccountOut:
    """The user (giving the old password) or an administrator (who may leave it out). 400
    "password too short" under 8 characters."""
    changed = await registry.accounts.set_password(caller, name, body.newPassword, body.oldPassword)
    return account_out(changed)


@router.put(
    "/accounts/{name}/activate",
    response_model=AccountOut,
    response_model_exclude_none=True,
    summary="Activate an account",
    responses=NOT_FOUND,
)
async def activate(registry: Services, caller: AsCaller, name: str) -> AccountOut:
    return account_out(await registry.accounts.set_active(caller, name, True))


@router.put(
    "/accounts/{name}/deactivate",
    response_model=AccountOut,
    response_model_exclude_none=True,
    summary="Deactivate an account: it signs in nowhere, its tokens stop working",
    responses=NOT_FOUND,
)
async def deactivate(registry: Services, caller: AsCaller, name: str) -> AccountOut:
    return account_out(await registry.accounts.set_active(caller, name, False))


@router.get(
    "/accounts/{name}/repositoryAccess/{namespace}/{repo:path}",
    response_model=UserAccessOut,
    response_model_exclude_none=True,
    summary="A user's access level to a repository",
    responses={404: error("No such user, or no such repository for the caller")},
)
async def user_access(
    registry: Services, caller: AsCaller, name: str, namespace: str, repo: str
) -> UserAccessOut:
    """The user or an administrator asks; ``none`` when the user has no access."""
    found = await registry.accounts.repository_access(caller, name, f"{namespace}/{repo}")
    return UserAccessOut(
        accessLevel=cast(AccessLevel, found.level.label),
        user=account_out(found.user),
        repository=repository_out(found.repository),
    )


# Personal access tokens


@router.post(
    "/accounts/{name}/tokens",
    status_code=201,
    response_model=NewTokenOut,
    summary="Create a personal access token",
    responses=NOT_FOUND,
)
async def create_token(registry: Services, caller: AsCaller, name: str, body: NewToken) -> NewTokenOut:
    """For the user themselves, or by an administrator for anyone. The secret is in this
    answer only: Wharf keeps a hash of it."""
    token, secret = await registry.accounts.create_token(
        caller, name, body.name, token_lifetime(body.expiresIn)
    )
    return NewTokenOut(
        id=token.id,
        name=token.name,
        createdAt=iso(token.created_at) or "",
        expiresAt=iso(token.expires_at),
        token=secret,
    )


@router.get(
    "/accounts/{name}/tokens",
    response_model=TokensOut,
    summary="A user's personal access tokens, without their secrets",
    responses=NOT_FOUND,
)
async def list_tokens(registry: Services, caller: AsCaller, name: str) -> TokensOut:
    return TokensOut(tokens=[token_out(token) for token in await registry.accounts.tokens(caller, name)])


@router.delete(
    "/accounts/{name}/tokens/{token_id}",
    status_code=204,
    summary="Revoke a personal access token: it stops working at once, on every replica",
    responses={404: error("No such token")},
)
async def revoke_token(registry: Services, caller: AsCaller, name: str, token_id: str) -> Response:
    await registry.accounts.revoke_token(caller, name, token_id)
    return Response(status_code=204)
