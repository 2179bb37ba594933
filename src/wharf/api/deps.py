"""What every /api/v0 operation is handed: the registry's services, and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..services.caller import UNRESTRICTED, Caller
from ..services.registry import Registry


def current_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def current_caller(request: Request) -> Caller:
    """Who sends this /api/v0 request and what they were granted, for every operation: the
    one place credentials will be read. Wharf has no accounts yet: anyone may do anything."""
    return Caller.anonymous(UNRESTRICTED)


Services = Annotated[Registry, Depends(current_registry)]
AsCaller = Annotated[Caller, Depends(current_caller)]
