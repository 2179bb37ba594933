"""Team access to an organization's repositories and to its whole namespace (DTR's
"organization-owned repository access").

Only an organization's repositories and namespace take team access, and only from the
organization's own teams. Granting needs ``admin`` on the repository (or on the
namespace); the grant on a namespace applies to every repository in it, existing or to
come."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from ..errors import NO_SUCH_ACCESS, TEAM_ACCESS_INVALID, RegistryError
from ..meta.accounts import AccountStore, RepositoryInfo, Team, TeamGrant
from ..meta.events import Event
from .access import AccessService, Level, Refused, namespace_of
from .accounts import is_name
from .caller import Caller
from .repositories import RepositoryService


@dataclass(frozen=True)
class Grant:
    team: Team
    level: str


class TeamAccessService:
    def __init__(
        self, accounts: AccountStore, access: AccessService, repositories: RepositoryService
    ) -> None:
        self._accounts = accounts
        self._access = access
        self._repositories = repositories

    async def _organization_of(self, namespace: str | None, kind: str, name: str) -> str:
        """The organization owning ``namespace`` (of ``name``: a repository or a namespace)."""
        found = await self._accounts.account(namespace) if namespace and is_name(namespace) else None
        if found is None or found.kind != "organization":
            raise RegistryError(
                TEAM_ACCESS_INVALID, {kind: name}, f"{kind} {name} is not owned by an organization"
            )
        return found.name

    async def _team_of(self, org: str, team: str) -> Team:
        found = await self._accounts.team(org, team) if is_name(team) else None
        if found is None:
            raise RegistryError(
                TEAM_ACCESS_INVALID,
                {"team": team},
                f"{team!r} is not a team of the owning organization {org}",
            )
        return found

    # One repository

    async def _administered(self, caller: Caller, name: str) -> tuple[RepositoryInfo, str]:
        repository = await self._repositories.administered(caller, name)
        return repository, await self._organization_of(namespace_of(name), "repository", name)

    async def repository_grants(
        self, caller: Caller, name: str, start: int, limit: int
    ) -> tuple[RepositoryInfo, list[Grant]]:
        repository, _org = await self._administered(caller, name)
        grants = await self._accounts.repository_grants(name)
        return repository, [_grant(grant) for grant in grants[start : start + limit]]

    async def grant_repository(
        self, caller: Caller, name: str, team: str, level: str
    ) -> tuple[RepositoryInfo, Grant]:
        repository, org = await self._administered(caller, name)
        found = await self._team_of(org, team)
        event = Event(caller.name, "access.grant", name, detail={"team": team, "level": level})
        if not await self._accounts.grant_repository(name, org, team, level, event):
            raise RegistryError(TEAM_ACCESS_INVALID, {"team": team}, f"{name} or {org}/{team} went meanwhile")
        return repository, Grant(found, level)

    async def revoke_repository(self, caller: Caller, name: str, team: str) -> None:
        """Revoking what was not granted changes nothing."""
        _repository, org = await self._administered(caller, name)
        if is_name(team):
            event = Event(caller.name, "access.revoke", name, detail={"team": team})
            await self._accounts.revoke_repository(name, org, team, event)

    # A whole namespace

    async def _require_namespace_admin(self, caller: Caller, namespace: str) -> str:
        if not is_name(namespace):
            await self._organization_of(namespace, "namespace", namespace)  # raises
        if await self._access.namespace_level(caller, namespace) < Level.ADMIN:
            _refuse(caller, f"change team access to the namespace {namespace}")
        return await self._organization_of(namespace, "namespace", namespace)

    async def namespace_grants(self, caller: Caller, namespace: str, start: int, limit: int) -> list[Grant]:
        await self._require_namespace_admin(caller, namespace)
        grants = await self._accounts.namespace_grants(namespace)
        return [_grant(grant) for grant in grants[start : start + limit]]

    async def namespace_grant(self, caller: Caller, namespace: str, team: str) -> Grant:
        """One team's access to the namespace: for admins of the namespace, its owners and
        the team's members."""
        if not is_name(namespace):
            await self._organization_of(namespace, "namespace", namespace)  # raises
        if await self._access.namespace_level(caller, namespace) < Level.ADMIN:
            member = (
                caller.user is not None
                and is_name(team)
                and await self._accounts.is_member(namespace, team, caller.user)
            )
            if not member:
                _refuse(caller, f"see team access to the namespace {namespace}")
        org = await self._organization_of(namespace, "namespace", namespace)
        found = await self._team_of(org, team)
        for grant in await self._accounts.namespace_grants(namespace):
            if grant.team.id == found.id:
                return _grant(grant)
        raise RegistryError(
            NO_SUCH_ACCESS, {"team": team}, f"team {team} has no access to the namespace {namespace}"
        )

    async def grant_namespace(self, caller: Caller, namespace: str, team: str, level: str) -> Grant:
        org = await self._require_namespace_admin(caller, namespace)
        found = await self._team_of(org, team)
        event = Event(
            caller.name, "access.grant", detail={"namespace": namespace, "team": team, "level": level}
        )
        if not await self._accounts.grant_namespace(namespace, org, team, level, event):
            raise RegistryError(TEAM_ACCESS_INVALID, {"team": team}, f"{org}/{team} went meanwhile")
        return Grant(found, level)

    async def revoke_namespace(self, caller: Caller, namespace: str, team: str) -> None:
        org = await self._require_namespace_admin(caller, namespace)
        if is_name(team):
            event = Event(caller.name, "access.revoke", detail={"namespace": namespace, "team": team})
            await self._accounts.revoke_namespace(namespace, org, team, event)


def _refuse(caller: Caller, what: str) -> NoReturn:
    if caller.is_anonymous:
        raise Refused(False, f"authentication required to {what}")
    raise Refused(True, f"{caller.name} may not {what}: that needs admin on the namespace")


def _grant(grant: TeamGrant) -> Grant:
    return Grant(grant.team, grant.level)
