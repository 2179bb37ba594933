"""The activity log: every push, tag move, delete, import and GC run, with its actor."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..meta.events import EventLog
from .access import PULL, AccessService, Refused, is_admin
from .caller import Caller


class ActivityLog:
    def __init__(self, events: EventLog, access: AccessService) -> None:
        self.events = events
        self.access = access

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
        ``until`` exclusive).

        A system administrator sees everything. Anyone else signed in sees a repository's
        events when they may pull from it, and otherwise their own doings only."""
        self.access.require_user(caller, "read the activity log")
        if not is_admin(caller):
            if repository is not None:
                await self.access.require(caller, PULL, repository)
            elif actor is None:
                actor = caller.name
            elif actor != caller.name:
                raise Refused(
                    True,
                    f"only a system administrator may read others' activity; {caller.name} "
                    f"asked for {actor!r} (name a repository you may pull from, or yourself)",
                )
        return await self.events.find(limit, start, repository, actor, action, since, until)
