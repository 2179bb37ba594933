"""Accounts and access's protocol: users, organizations, teams and their members, team access
to repositories and namespaces, repositories' visibility, personal access tokens.

The store keeps facts; ``services/access.py`` decides from them who may do what. Every
change records its event in the transaction that makes it true."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from .events import Event

Kind = Literal["user", "organization"]
Visibility = Literal["public", "private"]
# Ordered: each includes what the ones before it allow.
LEVELS = ("read-only", "read-write", "admin")
OWNERS = "owners"  # every organization's team whose members administer it


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    kind: Kind
    active: bool
    admin: bool
    password_hash: str | None  # users only; never leaves the services


@dataclass(frozen=True)
class Team:
    id: int
    org_id: int
    org: str
    name: str
    description: str


@dataclass(frozen=True)
class RepositoryInfo:
    id: int
    name: str  # the whole name: namespace/rest
    visibility: Visibility
    short_description: str
    long_description: str


@dataclass(frozen=True)
class TeamGrant:
    """A team's level on a repository or a namespace."""

    team: Team
    level: str
    target: str  # the repository's or the namespace's name


@dataclass(frozen=True)
class AccessFacts:
    """What decides one user's access to one repository, read in one query: the repository
    (None when it does not exist yet), whether the user is among the owners of the
    namespace's organization, and the levels their teams hold on the namespace and on the
    repository."""

    repository: RepositoryInfo | None
    namespace_owner: bool
    levels: tuple[str, ...]


@dataclass(frozen=True)
class PersonalToken:
    id: str
    user: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class AccountStore(Protocol):
    # Accounts
    async def create_account(
        self, name: str, kind: Kind, password_hash: str | None, active: bool, admin: bool, event: Event
    ) -> Account | None:
        """The new account; None when the name is taken (by a user or an organization). An
        organization is created with its ``owners`` team."""

    async def account(self, name: str) -> Account | None: ...

    async def accounts(self, start: int, limit: int) -> list[Account]:
        """By name."""

    async def update_account(
        self,
        name: str,
        event: Event,
        password_hash: str | None = None,
        active: bool | None = None,
        admin: bool | None = None,
    ) -> Account | None:
        """Change what is given; None when there is no such account."""

    async def delete_account(self, name: str, event: Event) -> bool:
        """Its teams, memberships and tokens go with it; its repositories stay (an
        administrator's to delete)."""

    async def administrators(self) -> int:
        """How many active system administrators there are."""

    async def organizations_of(self, user: str) -> list[Account]:
        """The organizations in one of whose teams the user is."""

    # Teams
    async def teams(self, org: str) -> list[Team]: ...

    async def team(self, org: str, name: str) -> Team | None: ...

    async def create_team(self, org: str, name: str, description: str, event: Event) -> Team | None:
        """None when the organization has a team of that name (or is not an organization)."""

    async def update_team(
        self, org: str, name: str, event: Event, new_name: str | None = None, description: str | None = None
    ) -> Team | None:
        """None when there is no such team; raises ``NameTaken`` when ``new_name`` is."""

    async def delete_team(self, org: str, name: str, event: Event) -> bool: ...

    async def members(self, org: str, team: str) -> list[Account]: ...

    async def is_member(self, org: str, team: str, user: str) -> bool: ...

    async def add_member(self, org: str, team: str, user: str, event: Event) -> bool:
        """False when the team or the user does not exist; adding a member twice is no change."""

    async def remove_member(self, org: str, team: str, user: str, event: Event) -> bool:
        """Whether they were a member."""

    # Access
    async def access_facts(self, user: str, repository: str, namespace: str | None) -> AccessFacts:
        """Everything ``services/access.py`` needs to decide ``user``'s access to
        ``repository`` (in ``namespace``; None for a name without one), in one read."""

    async def repository(self, name: str) -> RepositoryInfo | None: ...

    async def create_repository(
        self, name: str, visibility: Visibility, short: str, long: str, event: Event
    ) -> RepositoryInfo | None:
        """None when the repository exists already."""

    async def update_repository(
        self,
        name: str,
        event: Event,
        visibility: Visibility | None = None,
        short: str | None = None,
        long: str | None = None,
    ) -> RepositoryInfo | None: ...

    async def repositories(
        self, visible_to: str | None, everything: bool, namespace: str | None, start: int, limit: int
    ) -> list[RepositoryInfo]:
        """Repositories by name (of ``namespace`` when given) that ``visible_to`` (a user;
        None: anonymous) may read: public ones, their own namespace's, those of an
        organization whose owners they are among, and those their teams have access to;
        ``everything``: all of them (a system administrator)."""

    async def readable(self, visible_to: str | None, names: Sequence[str]) -> set[str]:
        """Which of ``names`` (existing repositories) ``visible_to`` may read, by the same
        rule as ``repositories``."""

    async def repository_grants(self, repository: str) -> list[TeamGrant]: ...

    async def namespace_grants(self, namespace: str) -> list[TeamGrant]: ...

    async def team_grants(self, org: str, team: str) -> list[TeamGrant]:
        """What the team has access to: repositories, then namespaces."""

    async def grant_repository(self, repository: str, org: str, team: str, level: str, event: Event) -> bool:
        """False when the repository or the team does not exist."""

    async def revoke_repository(self, repository: str, org: str, team: str, event: Event) -> bool: ...

    async def grant_namespace(self, namespace: str, org: str, team: str, level: str, event: Event) -> bool:
        """False when the team does not exist."""

    async def revoke_namespace(self, namespace: str, org: str, team: str, event: Event) -> bool: ...

    # Personal access tokens
    async def create_token(
        self, user: str, name: str, secret_hash: str, expires_at: datetime | None, event: Event
    ) -> PersonalToken | None:
        """None when there is no such user."""

    async def token_owner(self, secret_hash: str, now: datetime) -> tuple[PersonalToken, Account] | None:
        """The unexpired token with that hash and its owner (marking it used), or None."""

    async def tokens(self, user: str) -> list[PersonalToken]: ...

    async def revoke_token(self, user: str, token_id: str, event: Event) -> bool: ...

    # The token server's signing key
    async def signing_key(self, generate: Callable[[], str]) -> str:
        """The key every replica signs with: the one in the database, or ``generate()``'s,
        stored when none was (the first replica to store one wins)."""


class NameTaken(Exception):
    """A rename to a name that another team of the organization has."""
