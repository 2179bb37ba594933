"""Teams inside organizations, and their members: DTR's rules of who may see and change them.

The members of an organization (of any of its teams) see its teams; the members of a team
see its members; the organization's owners (its ``owners`` team) and system
administrators change them. The ``owners`` team keeps its name and stays: without it
nobody but an administrator could manage the organization."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NAME_TAKEN, NO_SUCH_ACCOUNT, NO_SUCH_TEAM, OWNERS_TEAM, RegistryError
from ..meta.accounts import OWNERS, Account, AccountStore, NameTaken, RepositoryInfo, Team
from ..meta.events import Event
from .access import AccessService, is_admin
from .accounts import check_name, check_text, is_name, no_account
from .caller import Caller

DESCRIPTION_LIMIT = 1000


@dataclass(frozen=True)
class RepositoryGrant:
    repository: RepositoryInfo
    level: str


def no_team(org: str, team: str) -> RegistryError:
    return RegistryError(NO_SUCH_TEAM, {"team": team}, f"organization {org!r} has no team named {team!r}")


class TeamService:
    def __init__(self, accounts: AccountStore, access: AccessService) -> None:
        self._accounts = accounts
        self._access = access

    # The rules, one per kind of caller; each raises ``Refused`` (401 anonymous, 403 known).

    async def organization(self, org: str) -> Account:
        found = await self._accounts.account(org) if is_name(org) else None
        if found is None or found.kind != "organization":
            raise no_account(org, "organization")
        return found

    async def is_owner(self, caller: Caller, org: str) -> bool:
        """Whether the caller administers ``org``: among its owners, or a system administrator."""
        if is_admin(caller):
            return True
        return caller.user is not None and await self._accounts.is_member(org, OWNERS, caller.user)

    async def _require_owner(self, caller: Caller, org: str, what: str) -> None:
        await self.organization(org)
        if not await self.is_owner(caller, org):
            self._access.require_admin(caller, f"{what} (only {org}'s owners or an administrator may)")

    async def _require_org_member(self, caller: Caller, org: str, what: str) -> None:
        await self.organization(org)
        if is_admin(caller):
            return
        if caller.user is not None and org in {
            found.name for found in await self._accounts.organizations_of(caller.user)
        }:
            return
        self._access.require_admin(caller, f"{what} (only members of {org} may)")

    async def _require_team_member(self, caller: Caller, org: str, team: str, what: str) -> None:
        """Owners of the organization, or members of the team."""
        await self._team(org, team)
        if await self.is_owner(caller, org):
            return
        if caller.user is not None and await self._accounts.is_member(org, team, caller.user):
            return
        self._access.require_admin(caller, f"{what} (only {org}'s owners or members of {team} may)")

    async def _team(self, org: str, team: str) -> Team:
        await self.organization(org)
        found = await self._accounts.team(org, team) if is_name(team) else None
        if found is None:
            raise no_team(org, team)
        return found

    # Teams

    async def teams(self, caller: Caller, org: str) -> list[Team]:
        await self._require_org_member(caller, org, f"list {org}'s teams")
        return await self._accounts.teams(org)

    async def team(self, caller: Caller, org: str, team: str) -> Team:
        await self._require_org_member(caller, org, f"see {org}'s teams")
        return await self._team(org, team)

    async def create(self, caller: Caller, org: str, name: str, description: str) -> Team:
        await self._require_owner(caller, org, f"create teams in {org}")
        check_name(name, "team")
        check_text(description, "a team's description", DESCRIPTION_LIMIT)
        event = Event(caller.name, "team.create", detail={"organization": org, "team": name})
        created = await self._accounts.create_team(org, name, description, event)
        if created is None:
            raise RegistryError(NAME_TAKEN, {"name": name}, f"organization {org!r} has a team named {name!r}")
        return created

    async def update(
        self, caller: Caller, org: str, team: str, name: str | None, description: str | None
    ) -> Team:
        await self._require_owner(caller, org, f"change {org}'s teams")
        await self._team(org, team)
        if name is not None:
            check_name(name, "team")
            if team == OWNERS and name != OWNERS:
                raise RegistryError(OWNERS_TEAM, {"team": team}, f"{org}'s {OWNERS} team cannot be renamed")
        if description is not None:
            check_text(description, "a team's description", DESCRIPTION_LIMIT)
        detail = {"organization": org, "team": team, "name": name}
        try:
            changed = await self._accounts.update_team(
                org, team, Event(caller.name, "team.update", detail=detail), name, description
            )
        except NameTaken:
            raise RegistryError(
                NAME_TAKEN, {"name": name}, f"organization {org!r} has a team named {name!r}"
            ) from None
        if changed is None:  # deleted in between
            raise no_team(org, team)
        return changed

    async def delete(self, caller: Caller, org: str, team: str) -> None:
        """Deleting a team that is not there changes nothing; the owners team stays."""
        await self._require_owner(caller, org, f"delete {org}'s teams")
        if team == OWNERS:
            raise RegistryError(OWNERS_TEAM, {"team": team}, f"{org}'s {OWNERS} team cannot be deleted")
        if is_name(team):
            event = Event(caller.name, "team.delete", detail={"organization": org, "team": team})
            await self._accounts.delete_team(org, team, event)

    # Members

    async def members(self, caller: Caller, org: str, team: str) -> list[Account]:
        await self._require_team_member(caller, org, team, f"list the members of {org}/{team}")
        return await self._accounts.members(org, team)

    async def is_member(self, caller: Caller, org: str, team: str, user: str) -> bool:
        """Asked by whoever can see the team (the organization's members)."""
        await self._require_org_member(caller, org, f"see {org}'s teams")
        await self._team(org, team)
        return is_name(user) and await self._accounts.is_member(org, team, user)

    async def add_member(self, caller: Caller, org: str, team: str, user: str) -> Account:
        await self._require_owner(caller, org, f"add members to {org}'s teams")
        await self._team(org, team)
        found = await self._accounts.account(user) if is_name(user) else None
        if found is None or found.kind != "user":
            raise RegistryError(NO_SUCH_ACCOUNT, {"name": user}, f"no user named {user!r}")
        event = Event(
            caller.name, "team.member.add", detail={"organization": org, "team": team, "user": user}
        )
        if not await self._accounts.add_member(org, team, user, event):
            raise no_team(org, team)  # the team or the user went in between
        return found

    async def remove_member(self, caller: Caller, org: str, team: str, user: str) -> None:
        """Removing someone who is not a member changes nothing."""
        await self._require_owner(caller, org, f"remove members from {org}'s teams")
        await self._team(org, team)
        if is_name(user):
            detail = {"organization": org, "team": team, "user": user}
            await self._accounts.remove_member(
                org, team, user, Event(caller.name, "team.member.remove", detail=detail)
            )

    # What a team may reach

    async def repository_access(
        self, caller: Caller, org: str, team: str
    ) -> tuple[Team, list[RepositoryGrant]]:
        """The repositories the team has access to, each with its level (access to whole
        namespaces is under ``/repositoryNamespaces``)."""
        await self._require_team_member(caller, org, team, f"see what {org}/{team} may access")
        found = await self._team(org, team)
        grants = []
        for grant in await self._accounts.team_grants(org, team):
            # A namespace's name has no slash; an organization's repository's always has.
            if "/" not in grant.target:
                continue
            repository = await self._accounts.repository(grant.target)
            if repository is not None:
                grants.append(RepositoryGrant(repository, grant.level))
        return found, grants
