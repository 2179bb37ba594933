"""Deleting images and repositories: DTR's soft delete."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..services.policy import ANONYMOUS
from ..services.registry import Registry
from .responses import error

router = APIRouter(tags=["repositories"])


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


@router.delete(
    "/repositories/{namespace}/{repo:path}/manifests/{reference}",
    status_code=204,
    summary="Delete an image (by digest, with its tags) or a tag",
    responses={404: error("No such repository, manifest or tag")},
)
async def delete_manifest(request: Request, namespace: str, repo: str, reference: str) -> Response:
    """By digest: the image leaves the repository with every tag on it. By tag: the tag
    alone. A soft delete: the bytes stay until garbage collection."""
    await _registry(request).manifests.delete(f"{namespace}/{repo}", reference, ANONYMOUS)
    return Response(status_code=204)


@router.delete(
    "/repositories/{namespace}/{repo:path}",
    status_code=204,
    summary="Delete a repository",
    responses={404: error("No such repository")},
)
async def delete_repository(request: Request, namespace: str, repo: str) -> Response:
    """Every manifest, tag and blob link of the repository; the bytes wait for garbage collection."""
    await _registry(request).manifests.delete_repository(f"{namespace}/{repo}", ANONYMOUS)
    return Response(status_code=204)
