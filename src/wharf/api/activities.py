"""The activity log: every push, tag move, delete, import and GC run, with its actor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from ..services.registry import Registry
from .jobs import iso
from .responses import MAX_START, Moment

router = APIRouter(tags=["activities"])


class Activity(BaseModel):
    id: int
    at: str
    actor: str
    action: str = ""
    repository: str | None
    reference: str | None
    digest: str | None
    detail: dict[str, Any] | None


class ActivitiesOut(BaseModel):
    activities: list[Activity]


@router.get("/activities", response_model=ActivitiesOut, summary="The activity log, newest first")
async def activities(
    request: Request,
    repository: str | None = None,
    actor: str | None = None,
    action: Annotated[
        str | None, Query(description="manifest.push, tag.move, manifest.delete, gc.run...")
    ] = None,
    since: Annotated[Moment | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[Moment | None, Query(description="ISO 8601, exclusive")] = None,
    start: Annotated[int, Query(ge=0, le=MAX_START)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ActivitiesOut:
    registry: Registry = request.app.state.registry
    rows = await registry.meta.events.find(limit, start, repository, actor, action, since, until)
    return ActivitiesOut(activities=[Activity(**{**row, "at": iso(row["at"])}) for row in rows])
