"""/v2/<name>/blobs/uploads/: start (session, monolithic, mount), PATCH, PUT, status, cancel."""

from __future__ import annotations

import contextlib
import re

from starlette.requests import Request
from starlette.responses import Response

from ..errors import DIGEST_INVALID, RANGE_INVALID, SIZE_INVALID, RegistryError
from ..reference import INT64_MAX, decimal
from ..services.caller import Caller
from ..services.registry import Registry
from ..services.uploads import UploadStatus
from .responses import empty

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)")


def _session_headers(name: str, status: UploadStatus) -> dict[str, str]:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{status.id}",
        "Range": f"0-{max(status.offset - 1, 0)}",
        "Docker-Upload-UUID": status.id,
    }


def _session(name: str, status: UploadStatus, code: int) -> Response:
    return empty(code, _session_headers(name, status))


async def _with_progress(
    registry: Registry, caller: Caller, name: str, upload_id: str, error: RegistryError
) -> RegistryError:
    """A refused chunk says where the upload stands, so the client can resume from there."""
    if error.code is RANGE_INVALID:
        # If the upload is gone meanwhile, the original error says enough.
        with contextlib.suppress(RegistryError):
            error.headers.update(
                _session_headers(name, await registry.uploads.status(caller, name, upload_id))
            )
    return error


def _created(name: str, digest: str) -> Response:
    return empty(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    length = decimal(raw) if raw else None
    if length is not None and length > INT64_MAX:
        raise RegistryError(
            SIZE_INVALID, {"content-length": _shown(raw or "")}, f"Content-Length is over {INT64_MAX}"
        )
    return length


def _shown(raw: str) -> str:
    """A header value as an error repeats it: a 5,000-digit number is not echoed whole."""
    return raw if len(raw) <= 64 else f"{raw[:64]}... ({len(raw)} characters)"


async def start(registry: Registry, caller: Caller, request: Request, name: str) -> Response:
    _content_length(request)  # a body no store could hold is refused before it is read
    params = request.query_params
    mount, source = params.get("mount"), params.get("from")
    if mount and source and await registry.uploads.mount(caller, name, mount, source):
        return _created(name, mount)
    digest = params.get("digest")
    if digest is not None:
        await registry.uploads.monolithic(caller, name, digest, request.stream())
        return _created(name, digest)
    return _session(name, await registry.uploads.start(caller, name), 202)


async def status(registry: Registry, caller: Caller, request: Request, name: str, upload_id: str) -> Response:
    return _session(name, await registry.uploads.status(caller, name, upload_id), 204)


async def patch(registry: Registry, caller: Caller, request: Request, name: str, upload_id: str) -> Response:
    start_at: int | None = None
    length = _content_length(request)
    content_range = request.headers.get("content-range")
    if content_range:
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        first, last = (decimal(match.group(1)), decimal(match.group(2))) if match else (None, None)
        if first is None or last is None or last < first or last > INT64_MAX:
            shown = _shown(content_range)
            raise RegistryError(RANGE_INVALID, {"content-range": shown}, f"invalid Content-Range {shown!r}")
        start_at = first
        declared = last - start_at + 1
        if length is not None and length != declared:
            raise RegistryError(
                RANGE_INVALID,
                {"content-range": content_range, "content-length": length},
                f"Content-Range covers {declared} bytes but Content-Length is {length}",
            )
        length = declared
    try:
        status = await registry.uploads.append(caller, name, upload_id, request.stream(), start_at, length)
    except RegistryError as error:
        raise await _with_progress(registry, caller, name, upload_id, error) from None
    return _session(name, status, 202)


async def finish(registry: Registry, caller: Caller, request: Request, name: str, upload_id: str) -> Response:
    _content_length(request)
    digest = request.query_params.get("digest")
    if not digest:
        raise RegistryError(
            DIGEST_INVALID, None, "the digest query parameter is required to complete an upload"
        )
    try:
        await registry.uploads.finish(caller, name, upload_id, digest, request.stream())
    except RegistryError as error:
        raise await _with_progress(registry, caller, name, upload_id, error) from None
    return _created(name, digest)


async def cancel(registry: Registry, caller: Caller, request: Request, name: str, upload_id: str) -> Response:
    await registry.uploads.cancel(caller, name, upload_id)
    return empty(204)
