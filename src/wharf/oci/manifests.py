"""/v2/<name>/manifests/<reference>: HEAD, GET, PUT and DELETE."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..errors import MANIFEST_TOO_BIG, RegistryError
from ..reference import decimal
from ..services.caller import Caller
from ..services.manifest_format import MAX_MANIFEST_BYTES
from ..services.registry import Registry
from .responses import empty, headers


def _too_big(size: int | str) -> RegistryError:
    return RegistryError(
        MANIFEST_TOO_BIG,
        {"size": size, "limit": MAX_MANIFEST_BYTES},
        f"manifest body exceeds the limit of {MAX_MANIFEST_BYTES} bytes",
    )


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` bytes."""
    declared = decimal(request.headers.get("content-length") or "")
    if declared is not None and declared > limit:
        raise _too_big(declared)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_big(f">{limit}")
    return bytes(body)


async def head_or_get(
    registry: Registry, caller: Caller, request: Request, name: str, reference: str
) -> Response:
    accept = request.headers.getlist("accept")
    manifest = await registry.manifests.get(caller, name, reference, accept)
    extra = {"Docker-Content-Digest": manifest.digest, "ETag": f'"{manifest.digest}"'}
    if request.method == "HEAD":
        extra |= {"Content-Length": str(len(manifest.payload)), "Content-Type": manifest.media_type}
        return Response(status_code=200, headers=headers(extra))
    return Response(manifest.payload, media_type=manifest.media_type, headers=headers(extra))


async def put(registry: Registry, caller: Caller, request: Request, name: str, reference: str) -> Response:
    payload = await read_limited(request, MAX_MANIFEST_BYTES)
    result = await registry.manifests.put(
        caller, name, reference, payload, request.headers.get("content-type")
    )
    extra = {"Location": f"/v2/{name}/manifests/{result.digest}", "Docker-Content-Digest": result.digest}
    if result.subject:
        extra["OCI-Subject"] = result.subject
    return empty(201, extra)


async def delete(registry: Registry, caller: Caller, request: Request, name: str, reference: str) -> Response:
    await registry.manifests.delete(caller, name, reference)
    return empty(202)
