"""Dispatch of /v2 paths to handlers.

Repository names contain slashes, so routes are matched as regular expressions over the
whole path (newlines included, so that the grammar refuses them rather than the router), most
specific first; names and digests are validated by the services.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..errors import NAME_UNKNOWN, UNSUPPORTED, RegistryError
from ..faults import answer_for
from ..metrics import ROUTE_KEY
from ..services.access import Refused
from ..services.caller import Caller
from ..services.registry import Registry
from . import blobs, listing, manifests, uploads
from .responses import empty, error_response, json_response

Handler = Callable[..., Awaitable[Response]]
log = logging.getLogger(__name__)

# (pattern, the route's template for metrics and logs, handlers by method)
ROUTES: list[tuple[re.Pattern[str], str, dict[str, Handler]]] = [
    (re.compile(r"(?s)/v2/_catalog"), "/v2/_catalog", {"GET": listing.catalog}),
    (
        re.compile(r"(?s)/v2/(?P<name>.+)/blobs/uploads/?"),
        "/v2/{name}/blobs/uploads/",
        {"POST": uploads.start},
    ),
    (
        re.compile(r"(?s)/v2/(?P<name>.+)/blobs/uploads/(?P<upload_id>[^/]+)"),
        "/v2/{name}/blobs/uploads/{reference}",
        {"GET": uploads.status, "PATCH": uploads.patch, "PUT": uploads.finish, "DELETE": uploads.cancel},
    ),
    (
        re.compile(r"(?s)/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)"),
        "/v2/{name}/blobs/{digest}",
        {"GET": blobs.head_or_get, "HEAD": blobs.head_or_get, "DELETE": blobs.delete},
    ),
    (
        re.compile(r"(?s)/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)"),
        "/v2/{name}/manifests/{reference}",
        {
            "GET": manifests.head_or_get,
            "HEAD": manifests.head_or_get,
            "PUT": manifests.put,
            "DELETE": manifests.delete,
        },
    ),
    (re.compile(r"(?s)/v2/(?P<name>.+)/tags/list"), "/v2/{name}/tags/list", {"GET": listing.tags}),
    (
        re.compile(r"(?s)/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)"),
        "/v2/{name}/referrers/{digest}",
        {"GET": listing.referrers},
    ),
]


async def version_check(request: Request) -> Response:
    """``GET /v2/``: 200 for a caller the registry knows (or when it tells none apart), else
    the 401 whose challenge tells clients to log in."""
    try:
        caller = await caller_of(request)
        # Any token of this registry will do (an anonymous one too, as Distribution's).
        from_token = caller.grant.scopes is not None
        if caller.is_anonymous and not from_token and request.app.state.registry.auth.enforcing:
            raise Refused(False, "authentication required")
    except RegistryError as error:
        return refused_response(request, error)
    return json_response({})


def _match(scope: MutableMapping[str, Any], path: str, method: str) -> tuple[Handler, dict[str, Any]]:
    """The handler and its parameters; the route's template goes into the scope (for a 405,
    the first route whose pattern matched the path)."""
    allowed: set[str] = set()
    for pattern, template, handlers in ROUTES:
        found = pattern.fullmatch(path)
        if found is None:
            continue
        handler = handlers.get(method)
        if handler is not None:
            scope[ROUTE_KEY] = template
            return handler, found.groupdict()
        scope.setdefault(ROUTE_KEY, template)
        allowed.update(handlers)
    if allowed:
        raise RegistryError(
            UNSUPPORTED,
            {"method": method, "allowed": sorted(allowed)},
            f"{method} is not supported on {path}",
            headers={"Allow": ", ".join(sorted(allowed))},
        )
    raise RegistryError(NAME_UNKNOWN, {"path": path}, f"no /v2 endpoint at {path}")


async def caller_of(request: Request) -> Caller:
    """Who sends this /v2 request and what they were granted, for every handler: the one
    place credentials are read (``Refused`` for credentials that prove nothing, and for a
    client the protected mode turns away)."""
    auth = request.app.state.registry.auth
    peer = request.client.host if request.client else None
    refusal = auth.protected_refusal(peer)
    if refusal is not None:
        raise Refused(True, refusal)
    caller: Caller = await auth.caller(request.headers.get("authorization"), peer)
    return caller


def refused_response(request: Request, error: RegistryError) -> Response:
    """An error answer; a 401 carries the challenge that says where to get credentials for
    what the request needed."""
    if error.status == 401:
        registry: Registry = request.app.state.registry
        scope = error.scope if isinstance(error, Refused) else None
        base = f"{request.url.scheme}://{request.headers.get('host') or request.url.netloc}"
        error.headers["WWW-Authenticate"] = registry.auth.challenge(base, scope)
    return error_response(error)


async def dispatch(request: Request) -> Response:
    registry: Registry = request.app.state.registry
    try:
        # The path as sent (percent-decoded), not request.url.path: building a URL drops
        # tabs, CRs and LFs (urllib's WHATWG rule), so `v7%0a` would tag `v7`. Here they
        # reach the name and reference grammar, which refuses them.
        handler, params = _match(request.scope, request.scope["path"], request.method)
        return await handler(registry, await caller_of(request), request, **params)
    except RegistryError as error:
        return refused_response(request, error)
    except ClientDisconnect:
        # The client is gone; nothing it sent was kept, and nobody reads this answer.
        return empty(400)
    except Exception as error:
        return error_response(answer_for(log, request.method, request.url.path, error))
