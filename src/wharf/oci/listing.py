"""Content discovery: tags list, catalog and referrers."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ..services.caller import Caller
from ..services.manifest_format import OCI_INDEX
from ..services.manifests import Page
from ..services.registry import Registry
from .responses import json_response, query_int

# The most names one answer carries; with no `n`, longer lists are paged with a Link header.
MAX_PAGE = 10_000


def _limit(request: Request) -> int:
    n = query_int(request, "n")
    return MAX_PAGE if n is None else min(n, MAX_PAGE)


def _next_link(path: str, page: Page, limit: int) -> dict[str, str]:
    if not page.more or not page.items:
        return {}
    return {"Link": f'<{path}?{urlencode({"n": limit, "last": page.items[-1]})}>; rel="next"'}


async def tags(registry: Registry, caller: Caller, request: Request, name: str) -> Response:
    limit = _limit(request)
    page = await registry.manifests.tags(caller, name, limit, request.query_params.get("last"))
    return json_response({"name": name, "tags": page.items}, extra=_next_link(request.url.path, page, limit))


async def catalog(registry: Registry, caller: Caller, request: Request) -> Response:
    limit = _limit(request)
    page = await registry.manifests.catalog(caller, limit, request.query_params.get("last"))
    return json_response({"repositories": page.items}, extra=_next_link(request.url.path, page, limit))


async def referrers(registry: Registry, caller: Caller, request: Request, name: str, digest: str) -> Response:
    artifact_type = request.query_params.get("artifactType") or None
    index = await registry.manifests.referrers(caller, name, digest, artifact_type)
    extra = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    return json_response(index, media_type=OCI_INDEX, extra=extra)
