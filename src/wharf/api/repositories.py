"""Repositories (DTR's `/repositories`): listed as the caller may see them, created, described,
deleted; their tags and manifests, listed and deleted (DTR's soft delete).

DTR names are namespace/repo; Wharf's /v2 takes any OCI name (``solo``, ``a/b/c``), so
these paths take names of more components too: ``/repositories/a/b/c`` is the repository
``b/c`` of the namespace ``a``, and the deletes take a name of one component (``solo``).
A path's last known word is what it asks for (``/tags``, ``/manifests/<reference>``);
everything before is the name. A name is never read with a trailing slash, and no path is
redirected to one: a path that names no repository is refused (400 or 404) saying what it
was given. The routes with a suffix come before the bare name's, which would take them
all."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..errors import NAME_INVALID, RegistryError
from ..meta.accounts import RepositoryInfo
from ..meta.manifests import ManifestInfo, TagInfo
from ..services.repositories import LONG_LIMIT, SHORT_LIMIT
from .deps import AsCaller, Services
from .jobs import iso
from .responses import MAX_START, Responses, error

router = APIRouter(tags=["repositories"])

Start = Annotated[int, Query(ge=0, le=MAX_START, description="how many to skip")]
Limit = Annotated[int, Query(ge=1, le=1000, description="how many at most")]
Visibility = Literal["public", "private"]


class RepositoryOut(BaseModel):
    id: int
    namespace: str = Field(description="the first component of the name ('' for a name of one)")
    name: str = Field(description="the rest of the name")
    shortDescription: str
    longDescription: str
    visibility: Visibility
    status: Literal["ok"]


def repository_out(repository: RepositoryInfo) -> RepositoryOut:
    namespace, slash, rest = repository.name.partition("/")
    if not slash:
        namespace, rest = "", namespace
    return RepositoryOut(
        id=repository.id,
        namespace=namespace,
        name=rest,
        shortDescription=repository.short_description,
        longDescription=repository.long_description,
        visibility=repository.visibility,
        status="ok",
    )


class RepositoriesOut(BaseModel):
    repositories: list[RepositoryOut]


class NewRepository(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the repository's name in the namespace (lowercase, as /v2 takes)")
    shortDescription: str = Field(default="", max_length=SHORT_LIMIT)
    longDescription: str = Field(default="", max_length=LONG_LIMIT)
    visibility: Visibility = "private"


class RepositoryChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shortDescription: str | None = Field(default=None, max_length=SHORT_LIMIT)
    longDescription: str | None = Field(default=None, max_length=LONG_LIMIT)
    visibility: Visibility | None = None


class TagOut(BaseModel):
    name: str
    digest: str = Field(description="the manifest the tag names")
    mediaType: str
    size: int
    updatedAt: str = Field(description="when the tag last moved")


def tag_out(tag: TagInfo) -> TagOut:
    return TagOut(
        name=tag.name,
        digest=tag.digest,
        mediaType=tag.media_type,
        size=tag.size,
        updatedAt=iso(tag.updated_at) or "",
    )


class ManifestOut(BaseModel):
    digest: str
    mediaType: str
    size: int
    createdAt: str
    tags: list[str] = Field(description="the tags naming it")


def manifest_out(manifest: ManifestInfo) -> ManifestOut:
    return ManifestOut(
        digest=manifest.digest,
        mediaType=manifest.media_type,
        size=manifest.size,
        createdAt=iso(manifest.created_at) or "",
        tags=list(manifest.tags),
    )


def _named(request: Request, name: str) -> str:
    if not name:
        raise RegistryError(
            NAME_INVALID, {"name": name}, f"{request.url.path} names no repository: /repositories/<name>"
        )
    return name


UNSEEN: Responses = {404: error("No such repository, or not one the caller may see")}


@router.get("/repositories/", response_model=RepositoriesOut, summary="The repositories the caller may see")
async def list_repositories(
    registry: Services, caller: AsCaller, start: Start = 0, limit: Limit = 100
) -> RepositoriesOut:
    """By name: public ones, the caller's own, their organizations' and their teams'; all of
    them for an administrator."""
    found = await registry.repositories.visible(caller, None, start, limit)
    return RepositoriesOut(repositories=[repository_out(repository) for repository in found])


@router.get(
    "/repositories/{namespace}",
    response_model=RepositoriesOut,
    summary="The repositories of a namespace the caller may see",
)
async def list_namespace(
    registry: Services, caller: AsCaller, namespace: str, start: Start = 0, limit: Limit = 100
) -> RepositoriesOut:
    found = await registry.repositories.visible(caller, namespace, start, limit)
    return RepositoriesOut(repositories=[repository_out(repository) for repository in found])


@router.post(
    "/repositories/{namespace}",
    status_code=201,
    response_model=RepositoryOut,
    summary="Create a repository",
)
async def create_repository(
    registry: Services, caller: AsCaller, namespace: str, body: NewRepository
) -> RepositoryOut:
    """Needs admin on the namespace: the user it is, the organization's owners, a team with
    admin on it, or an administrator. 400 when the name is invalid or taken."""
    created = await registry.repositories.create(
        caller, namespace, body.name, body.visibility, body.shortDescription, body.longDescription
    )
    return repository_out(created)


@router.get(
    "/repositories/{namespace}/{repo:path}/tags",
    response_model=list[TagOut],
    summary="A repository's tags",
    responses=UNSEEN,
)
async def list_tags(
    registry: Services, caller: AsCaller, namespace: str, repo: str, start: Start = 0, limit: Limit = 100
) -> list[TagOut]:
    found = await registry.repositories.tags(caller, f"{namespace}/{repo}", start, limit)
    return [tag_out(tag) for tag in found]


@router.delete(
    "/repositories/{namespace}/{repo:path}/tags/{tag}",
    status_code=204,
    summary="Delete a tag (its image stays)",
    responses={404: error("No such repository or tag")},
)
async def delete_tag(registry: Services, caller: AsCaller, namespace: str, repo: str, tag: str) -> Response:
    await registry.repositories.delete_tag(caller, f"{namespace}/{repo}", tag)
    return Response(status_code=204)


@router.get(
    "/repositories/{namespace}/{repo:path}/manifests",
    response_model=list[ManifestOut],
    summary="A repository's manifests, oldest first",
    responses=UNSEEN,
)
async def list_manifests(
    registry: Services, caller: AsCaller, namespace: str, repo: str, start: Start = 0, limit: Limit = 100
) -> list[ManifestOut]:
    found = await registry.repositories.manifests(caller, f"{namespace}/{repo}", start, limit)
    return [manifest_out(manifest) for manifest in found]


@router.delete(
    "/repositories/{name:path}/manifests/{reference}",
    status_code=204,
    summary="Delete an image (by digest, with its tags) or a tag",
    responses={404: error("No such repository, manifest or tag")},
)
async def delete_manifest(
    request: Request, registry: Services, caller: AsCaller, name: str, reference: str
) -> Response:
    """By digest: the image leaves the repository with every tag on it. By tag: the tag
    alone. A soft delete: the bytes stay until garbage collection. ``name`` is the whole
    repository name, of one component or more (``solo``, ``team/app``)."""
    await registry.repositories.delete_manifest(caller, _named(request, name), reference)
    return Response(status_code=204)


@router.get(
    "/repositories/{namespace}/{repo:path}",
    response_model=RepositoryOut,
    summary="One repository",
    responses=UNSEEN,
)
async def get_repository(registry: Services, caller: AsCaller, namespace: str, repo: str) -> RepositoryOut:
    return repository_out(await registry.repositories.get(caller, f"{namespace}/{repo}"))


@router.patch(
    "/repositories/{namespace}/{repo:path}",
    response_model=RepositoryOut,
    summary="Change a repository's visibility or descriptions (not its name)",
    responses=UNSEEN,
)
async def update_repository(
    registry: Services, caller: AsCaller, namespace: str, repo: str, body: RepositoryChange
) -> RepositoryOut:
    changed = await registry.repositories.update(
        caller, f"{namespace}/{repo}", body.visibility, body.shortDescription, body.longDescription
    )
    return repository_out(changed)


@router.delete(
    "/repositories/{name:path}",
    status_code=204,
    summary="Delete a repository",
    responses=UNSEEN,
)
async def delete_repository(request: Request, registry: Services, caller: AsCaller, name: str) -> Response:
    """Every manifest, tag and blob link of the repository, and its team access; the bytes
    wait for garbage collection. 204 also when there was no such repository."""
    await registry.repositories.delete(caller, _named(request, name))
    return Response(status_code=204)
