"""The /api/v0 application: routers per resource, errors in the registry's JSON shape."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ..errors import RegistryError
from ..faults import answer_for
from ..services.registry import Registry
from . import accounts, activities, docs, gc_settings, jobs, repositories, team_access, teams
from .limits import BodyLimit
from .responses import ERRORS, ErrorResponse

log = logging.getLogger(__name__)

# The framework's own refusals (no route, a body that is not JSON), in the registry's shape.
_HTTP_CODES = {400: "INVALID_JSON", 404: "NOT_FOUND", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = error.detail
    if error.status_code == 404 and message == "Not Found":  # no route: say which path
        message = f"nothing at {request.method} {request.url.path}"
    if error.status_code == 405 and message == "Method Not Allowed":
        message = f"{request.method} is not allowed on {request.url.path}"
    body = {"errors": [{"code": _HTTP_CODES.get(error.status_code, "UNKNOWN"), "message": message}]}
    return ErrorResponse(body, status_code=error.status_code, headers=error.headers)


async def _text_query(request: Request) -> None:
    """Every query parameter is text: none holds a NUL (PostgreSQL cannot compare one, and no
    name, action, actor or worker has one). Checked once, for every operation."""
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise RequestValidationError(
                [{"loc": ("query", name), "msg": "must not contain a NUL character", "type": "value_error"}]
            )


def create_api(registry: Registry) -> FastAPI:
    """The API over ``registry``'s services; the configuration reaches it only through them."""
    api = FastAPI(
        dependencies=[Depends(_text_query)],
        title="Wharf admin API",
        version="0",
        description=(
            "DTR-compatible administration: accounts, teams and access; repositories, deleting "
            "images; garbage collection and jobs."
        ),
        openapi_url="/openapi.json",
        docs_url=None,  # docs.py serves the page, with its assets from Wharf itself
        redoc_url=None,
        # A path that names nothing is refused, not redirected to the same path with a
        # slash: DELETE /repositories/solo would be sent to /repositories/solo/.
        redirect_slashes=False,
    )
    api.state.registry = registry

    @api.exception_handler(RegistryError)
    async def registry_error(_request: Request, error: RegistryError) -> JSONResponse:
        headers = dict(error.headers)
        if error.status == 401:  # the API takes Basic credentials, as DTR's documents use
            headers.setdefault("WWW-Authenticate", registry.auth.basic_challenge)
        return ErrorResponse(error.body(), status_code=error.status, headers=headers or None)

    api.add_exception_handler(HTTPException, http_error)
    # Every body here is a small JSON document: none is read whole beyond the cap.
    api.add_middleware(BodyLimit)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"code": "INVALID_JSON", "message": f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"}
            for e in error.errors()
        ]
        return ErrorResponse({"errors": problems}, status_code=400)

    @api.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        # The server's failure, still in the registry's JSON shape (Starlette's default is
        # the text "Internal Server Error"); a fault (database down, disk full) says so.
        answer = answer_for(log, _request.method, _request.url.path, error)
        return ErrorResponse(answer.body(), status_code=answer.status)

    # team_access before repositories: /repositories/{namespace}/{repo} would take its paths.
    for module in (accounts, teams, team_access, repositories, jobs, gc_settings, activities):
        api.include_router(module.router, responses=ERRORS)
    api.include_router(docs.router)
    return api
