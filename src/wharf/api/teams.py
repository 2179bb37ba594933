"""Teams inside organizations (DTR's `/accounts/{org}/teams`): the teams, their members, and
the repositories each may reach."""

from __future__ import annotations

from typing import Literal, cast

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from ..errors import NOT_A_MEMBER, RegistryError
from ..meta.accounts import Team
from .accounts import AccountOut, account_out
from .deps import AsCaller, Services
from .repositories import RepositoryOut, repository_out
from .responses import Responses, error

router = APIRouter(tags=["teams"])

AccessLevel = Literal["read-only", "read-write", "admin"]


class TeamOut(BaseModel):
    id: int
    orgID: int
    type: Literal["managed"] = "managed"
    name: str
    description: str


def team_out(team: Team) -> TeamOut:
    return TeamOut(id=team.id, orgID=team.org_id, name=team.name, description=team.description)


class TeamsOut(BaseModel):
    teams: list[TeamOut]


class NewTeam(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="lowercase letters and digits, then also '-' and '_'")
    description: str = ""
    type: Literal["managed"] = Field(default="managed", description="the members are managed here")


class TeamChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="a new name (the owners team keeps its own)")
    description: str | None = None


class MembersOut(BaseModel):
    members: list[AccountOut]


class RepositoryAccessOut(BaseModel):
    accessLevel: AccessLevel
    repository: RepositoryOut


class TeamRepositoriesOut(BaseModel):
    team: TeamOut
    repositoryAccessList: list[RepositoryAccessOut]


NOT_FOUND: Responses = {404: error("No such organization or team")}


@router.get(
    "/accounts/{org}/teams", response_model=TeamsOut, summary="An organization's teams", responses=NOT_FOUND
)
async def list_teams(registry: Services, caller: AsCaller, org: str) -> TeamsOut:
    """For the organization's members and administrators."""
    return TeamsOut(teams=[team_out(team) for team in await registry.teams.teams(caller, org)])


@router.post(
    "/accounts/{org}/teams",
    status_code=201,
    response_model=TeamOut,
    summary="Create a team",
    responses=NOT_FOUND,
)
async def create_team(registry: Services, caller: AsCaller, org: str, body: NewTeam) -> TeamOut:
    """For the organization's owners and administrators; 400 when the name is invalid or taken."""
    return team_out(await registry.teams.create(caller, org, body.name, body.description))


@router.get("/accounts/{org}/teams/{team}", response_model=TeamOut, summary="One team", responses=NOT_FOUND)
async def get_team(registry: Services, caller: AsCaller, org: str, team: str) -> TeamOut:
    return team_out(await registry.teams.team(caller, org, team))


@router.patch(
    "/accounts/{org}/teams/{team}",
    response_model=TeamOut,
    summary="Rename a team or change its description",
    responses=NOT_FOUND,
)
async def update_team(registry: Services, caller: AsCaller, org: str, team: str, body: TeamChange) -> TeamOut:
    return team_out(await registry.teams.update(caller, org, team, body.name, body.description))


@router.delete("/accounts/{org}/teams/{team}", status_code=204, summary="Delete a team", responses=NOT_FOUND)
async def delete_team(registry: Services, caller: AsCaller, org: str, team: str) -> Response:
    """204 also when there was no such team; its members and access go with it."""
    await registry.teams.delete(caller, org, team)
    return Response(status_code=204)


@router.get(
    "/accounts/{org}/teams/{team}/members",
    response_model=MembersOut,
    response_model_exclude_none=True,
    summary="A team's members",
    responses=NOT_FOUND,
)
async def list_members(registry: Services, caller: AsCaller, org: str, team: str) -> MembersOut:
    """For the organization's owners, the team's members and administrators."""
    members = await registry.teams.members(caller, org, team)
    return MembersOut(members=[account_out(member) for member in members])


@router.get(
    "/accounts/{org}/teams/{team}/members/{member}",
    status_code=204,
    summary="Whether a user is a member of a team: 204 when they are, 404 when not",
    responses={404: error("Not a member, or no such organization or team")},
)
async def check_member(registry: Services, caller: AsCaller, org: str, team: str, member: str) -> Response:
    if not await registry.teams.is_member(caller, org, team, member):
        raise RegistryError(NOT_A_MEMBER, {"member": member}, f"{member!r} is not a member of {org}/{team}")
    return Response(status_code=204)


@router.put(
    "/accounts/{org}/teams/{team}/members/{member}",
    response_model=AccountOut,
    response_model_exclude_none=True,
    summary="Add a user to a team",
    responses={404: error("No such organization, team or user")},
)
async def add_member(registry: Services, caller: AsCaller, org: str, team: str, member: str) -> AccountOut:
    """For the organization's owners and administrators; adding a member twice is no change."""
    return account_out(await registry.teams.add_member(caller, org, team, member))


@router.delete(
    "/accounts/{org}/teams/{team}/members/{member}",
    status_code=204,
    summary="Remove a user from a team",
    responses=NOT_FOUND,
)
async def remove_member(registry: Services, caller: AsCaller, org: str, team: str, member: str) -> Response:
    """204 also when they were not a member."""
    await registry.teams.remove_member(caller, org, team, member)
    return Response(status_code=204)


@router.get(
    "/accounts/{org}/teams/{team}/repositoryAccess",
    response_model=TeamRepositoriesOut,
    summary="The repositories a team has access to",
    responses=NOT_FOUND,
)
async def team_repositories(registry: Services, caller: AsCaller, org: str, team: str) -> TeamRepositoriesOut:
    """For the organization's owners and the team's members. Access to whole namespaces is
    under /repositoryNamespaces."""
    found, grants = await registry.teams.repository_access(caller, org, team)
    return TeamRepositoriesOut(
        team=team_out(found),
        repositoryAccessList=[
            RepositoryAccessOut(
                accessLevel=cast(AccessLevel, grant.level), repository=repository_out(grant.repository)
            )
            for grant in grants
        ],
    )
