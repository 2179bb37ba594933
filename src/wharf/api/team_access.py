"""Team access to an organization's repositories and namespace (DTR's `teamAccess`).

These routes come before the repositories' own: ``/repositories/{namespace}/{repo}``
would take ``.../teamAccess`` as part of a name."""

from __future__ import annotations

from typing import Annotated, Literal, cast

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict

from ..services.team_access import Grant
from .deps import AsCaller, Services
from .repositories import RepositoryOut, repository_out
from .responses import MAX_START, Responses, error
from .teams import TeamOut, team_out

router = APIRouter(tags=["team access"])

Start = Annotated[int, Query(ge=0, le=MAX_START, description="how many to skip")]
Limit = Annotated[int, Query(ge=1, le=1000, description="how many at most")]
AccessLevel = Literal["read-only", "read-write", "admin"]


class AccessLevelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accessLevel: AccessLevel


class TeamAccessOut(BaseModel):
    accessLevel: AccessLevel
    team: TeamOut


def team_access_out(grant: Grant) -> TeamAccessOut:
    return TeamAccessOut(accessLevel=cast(AccessLevel, grant.level), team=team_out(grant.team))


class RepositoryTeamsOut(BaseModel):
    teamAccessList: list[TeamAccessOut]
    repository: RepositoryOut


class RepositoryTeamOut(BaseModel):
    accessLevel: AccessLevel
    team: TeamOut
    repository: RepositoryOut


class NamespaceTeamsOut(BaseModel):
    teamAccessList: list[TeamAccessOut]
    namespace: str


class NamespaceTeamOut(BaseModel):
    accessLevel: AccessLevel
    team: TeamOut
    namespace: str


REFUSED: Responses = {
    400: error("Not an organization's repository or namespace, or not a team of that organization"),
    404: error("No such repository, or not one the caller may see"),
}


@router.get(
    "/repositories/{namespace}/{repo:path}/teamAccess",
    response_model=RepositoryTeamsOut,
    summary="The teams with access to a repository",
    responses=REFUSED,
)
async def repository_teams(
    registry: Services, caller: AsCaller, namespace: str, repo: str, start: Start = 0, limit: Limit = 100
) -> RepositoryTeamsOut:
    """Needs admin on the repository."""
    repository, grants = await registry.team_access.repository_grants(
        caller, f"{namespace}/{repo}", start, limit
    )
    return RepositoryTeamsOut(
        teamAccessList=[team_access_out(grant) for grant in grants], repository=repository_out(repository)
    )


@router.put(
    "/repositories/{namespace}/{repo:path}/teamAccess/{team}",
    response_model=RepositoryTeamOut,
    summary="Grant a team access to a repository",
    responses=REFUSED,
)
async def grant_repository(
    registry: Services, caller: AsCaller, namespace: str, repo: str, team: str, body: AccessLevelIn
) -> RepositoryTeamOut:
    """Needs admin on the repository; the team must be of the organization owning it."""
    repository, grant = await registry.team_access.grant_repository(
        caller, f"{namespace}/{repo}", team, body.accessLevel
    )
    return RepositoryTeamOut(
        accessLevel=cast(AccessLevel, grant.level),
        team=team_out(grant.team),
        repository=repository_out(repository),
    )


@router.delete(
    "/repositories/{namespace}/{repo:path}/teamAccess/{team}",
    status_code=204,
    summary="Revoke a team's access to a repository",
    responses=REFUSED,
)
async def revoke_repository(
    registry: Services, caller: AsCaller, namespace: str, repo: str, team: str
) -> Response:
    """204 also when the team had no access."""
    await registry.team_access.revoke_repository(caller, f"{namespace}/{repo}", team)
    return Response(status_code=204)


@router.get(
    "/repositoryNamespaces/{namespace}/teamAccess",
    response_model=NamespaceTeamsOut,
    summary="The teams with access to a whole namespace",
    responses=REFUSED,
)
async def namespace_teams(
    registry: Services, caller: AsCaller, namespace: str, start: Start = 0, limit: Limit = 100
) -> NamespaceTeamsOut:
    """Needs admin on the namespace."""
    grants = await registry.team_access.namespace_grants(caller, namespace, start, limit)
    return NamespaceTeamsOut(teamAccessList=[team_access_out(grant) for grant in grants], namespace=namespace)


@router.get(
    "/repositoryNamespaces/{namespace}/teamAccess/{team}",
    response_model=NamespaceTeamOut,
    summary="One team's access to a whole namespace",
    responses={**REFUSED, 404: error("The team has no access to the namespace")},
)
async def namespace_team(registry: Services, caller: AsCaller, namespace: str, team: str) -> NamespaceTeamOut:
    """For admins of the namespace, its owners and the team's members."""
    grant = await registry.team_access.namespace_grant(caller, namespace, team)
    return NamespaceTeamOut(
        accessLevel=cast(AccessLevel, grant.level), team=team_out(grant.team), namespace=namespace
    )


@router.put(
    "/repositoryNamespaces/{namespace}/teamAccess/{team}",
    response_model=NamespaceTeamOut,
    summary="Grant a team access to every repository of a namespace, existing or to come",
    responses=REFUSED,
)
async def grant_namespace(
    registry: Services, caller: AsCaller, namespace: str, team: str, body: AccessLevelIn
) -> NamespaceTeamOut:
    """Needs admin on the namespace; the team must be of the namespace's organization."""
    grant = await registry.team_access.grant_namespace(caller, namespace, team, body.accessLevel)
    return NamespaceTeamOut(
        accessLevel=cast(AccessLevel, grant.level), team=team_out(grant.team), namespace=namespace
    )


@router.delete(
    "/repositoryNamespaces/{namespace}/teamAccess/{team}",
    status_code=204,
    summary="Revoke a team's access to a namespace",
    responses=REFUSED,
)
async def revoke_namespace(registry: Services, caller: AsCaller, namespace: str, team: str) -> Response:
    """204 also when the team had no access."""
    await registry.team_access.revoke_namespace(caller, namespace, team)
    return Response(status_code=204)
