"""Deleting images and repositories: DTR's soft delete.

DTR names are namespace/repo; Wharf's /v2 takes any OCI name (``solo``, ``a/b/c``), so
these paths take any name too: everything before ``/manifests/<reference>`` is the name. A
name is never read with a trailing slash, and no path is redirected to one: a path that
names no repository is refused (400 or 404) saying what it was given."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..errors import NAME_INVALID, RegistryError
from ..services.policy import ANONYMOUS
from ..services.registry import Registry
from .responses import error

router = APIRouter(tags=["repositories"])


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _named(request: Request, name: str) -> str:
    if not name:
        raise RegistryError(
            NAME_INVALID, {"name": name}, f"{request.url.path} names no repository: /repositories/<name>"
        )
    return name


@router.delete(
    "/repositories/{name:path}/manifests/{reference}",
    status_code=204,
    summary="Delete an image (by digest, with its tags) or a tag",
    responses={404: error("No such repository, manifest or tag")},
)
async def delete_manifest(request: Request, name: str, reference: str) -> Response:
    """By digest: the image leaves the repository with every tag on it. By tag: the tag
    alone. A soft delete: the bytes stay until garbage collection. ``name`` is the whole
    repository name, of one component or more (``solo``, ``team/app``)."""
    await _registry(request).manifests.delete(_named(request, name), reference, ANONYMOUS)
    return Response(status_code=204)


@router.delete(
    "/repositories/{name:path}",
    status_code=204,
    summary="Delete a repository",
    responses={404: error("No such repository")},
)
async def delete_repository(request: Request, name: str) -> Response:
    """Every manifest, tag and blob link of the repository; the bytes wait for garbage collection."""
    await _registry(request).manifests.delete_repository(_named(request, name), ANONYMOUS)
    return Response(status_code=204)
