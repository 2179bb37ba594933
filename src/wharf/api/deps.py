"""What every /api/v0 operation is handed: the registry's services, and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..services.access import Refused
from ..services.caller import Caller
from ..services.registry import Registry


def current_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


async def current_caller(request: Request) -> Caller:
    """Who sends this /api/v0 request and what they were granted, for every operation: the
    one place credentials are read: HTTP Basic, as DTR's documents use. Bearer tokens are
    refused here: a token grants actions on repositories, and the admin API's rules (a user
    managing themselves, an organization's owners) would read it as its whole account."""
    registry: Registry = request.app.state.registry
    auth = registry.auth
    peer = request.client.host if request.client else None
    refusal = auth.protected_refusal(peer)
    if refusal is not None:
        raise Refused(True, refusal)
    return await auth.caller(request.headers.get("authorization"), peer, bearer=False)


Services = Annotated[Registry, Depends(current_registry)]
AsCaller = Annotated[Caller, Depends(current_caller)]
