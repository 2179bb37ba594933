"""The activity log: every push, tag move, delete, import and GC run, with its actor."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..meta.events import EventLog
from .caller import Caller


class ActivityLog:
    def __init__(self, events: EventLog) -> None:
        self.events = events

    async def find(
        self,
        caller: Caller,
        limit: int,
        start: int,
        repository: str | None,
        actor: str | None,
        action: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> list[dict[str, Any]]:
        """Newest first, filtered by whichever of these are given (``since`` inclusive,
        ``until`` exclusive)."""
        return await self.events.find(limit, start, repository, actor, action, since, until)
