"""/v2/<name>/blobs/<digest>: HEAD, GET (with byte ranges) and DELETE."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import RANGE_INVALID, RegistryError
from ..reference import decimal
from ..services.caller import Caller
from ..services.registry import Registry
from .responses import empty, headers

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range as (start, end exclusive); None to send the whole blob."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        if "," in header:
            return None  # several ranges: answering with the whole blob is allowed
        raise _unsatisfiable(header, size)
    first, last = match.groups()
    if first == "" and last == "":
        raise _unsatisfiable(header, size)
    # Numbers past int64 are larger than any blob and are read as such (never parsed in full).
    if first == "":
        length = _number(last)
        if length == 0:
            raise _unsatisfiable(header, size)
        return max(size - length, 0), size
    start = _number(first)
    end = size if last == "" else min(_number(last) + 1, size)
    if start >= size or end <= start:
        raise _unsatisfiable(header, size)
    return start, end


def _number(digits: str) -> int:
    value = decimal(digits)
    assert value is not None  # the pattern matched digits
    return value


def _unsatisfiable(header: str, size: int) -> RegistryError:
    return RegistryError(
        RANGE_INVALID,
        {"range": header, "size": size},
        f"range {header!r} not satisfiable for a blob of {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


async def head_or_get(
    registry: Registry, caller: Caller, request: Request, name: str, digest: str
) -> Response:
    info = await registry.blobs.stat(caller, name, digest, check_storage=request.method == "HEAD")
    base = {"Docker-Content-Digest": digest, "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
    if request.method == "HEAD":
        return Response(
            status_code=200,
            headers=headers(
                {**base, "Content-Length": str(info.size), "Content-Type": "application/octet-stream"}
            ),
        )
    redirect = await registry.blobs.redirect_url(caller, digest)
    if redirect is not None:
        # The object store serves the bytes (and the client's Range) itself.
        return empty(307, {**base, "Location": redirect})
    range_header = request.headers.get("range")
    selected = parse_range(range_header, info.size) if range_header else None
    if selected is None:
        return StreamingResponse(
            await registry.blobs.open(caller, digest),
            media_type="application/octet-stream",
            headers=headers({**base, "Content-Length": str(info.size)}),
        )
    start, end = selected
    partial = {"Content-Range": f"bytes {start}-{end - 1}/{info.size}", "Content-Length": str(end - start)}
    return StreamingResponse(
        await registry.blobs.open(caller, digest, start, end),
        status_code=206,
        media_type="application/octet-stream",
        headers=headers({**base, **partial}),
    )


async def delete(registry: Registry, caller: Caller, request: Request, name: str, digest: str) -> Response:
    await registry.blobs.delete(caller, name, digest)
    return empty(202)
