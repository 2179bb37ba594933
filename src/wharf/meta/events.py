"""The activity log's protocol: who did what, when, to which repository."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Event:
    actor: str
    action: str
    repository: str | None = None
    reference: str | None = None
    digest: str | None = None
    detail: dict[str, Any] | None = field(default=None)


class EventLog(Protocol):
    """The other domains add their events in the transactions that make them true; this is
    for events of their own (a GC run) and for reading the log."""

    async def record(self, event: Event) -> None:
        """Add an event to the activity log."""

    async def find(
        self,
        limit: int = 100,
        start: int = 0,
        repository: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The activity log, newest first, filtered by whichever of these are given."""
