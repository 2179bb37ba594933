"""Response helpers shared by the /v2 handlers: headers every answer carries, errors as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import PAGINATION_NUMBER_INVALID, RegistryError
from ..reference import INT64_MAX, decimal

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


def headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**API_VERSION, **(extra or {})}


def empty(status: int, extra: Mapping[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers({"Content-Length": "0", **(extra or {})}))


def json_response(
    body: Any, media_type: str = "application/json", extra: Mapping[str, str] | None = None
) -> Response:
    payload = json.dumps(body, separators=(",", ":")).encode()
    return Response(payload, media_type=media_type, headers=headers(extra))


def error_response(error: RegistryError) -> Response:
    return Response(
        json.dumps(error.body()).encode(),
        status_code=error.status,
        media_type="application/json",
        headers=headers(error.headers),
    )


def query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    value = decimal(raw)
    if value is None or value > INT64_MAX:
        raise RegistryError(
            PAGINATION_NUMBER_INVALID,
            {name: raw if len(raw) <= 40 else f"{raw[:40]}... ({len(raw)} characters)"},
            f"{name} must be an integer from 0 to {INT64_MAX}",
        )
    return value
