"""Garbage collection settings (schedule, duration, mode) and the cron schedules that start
jobs from them. Cron is UTC, five fields, or six with seconds first (``0 0 3 * * SAT`` is
Saturday 03:00:00), as DTR documents."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from croniter import croniter

from ..meta.store import Job, MetadataStore

GC_SETTINGS = "garbageCollection"
Duration = Literal["untilDone", "minutes", "never"]
Mode = Literal["readonly", "online"]


class InvalidSchedule(ValueError):
    pass


def parse_cron(expression: str) -> tuple[str, bool]:
    """(the expression, whether seconds come first); InvalidSchedule naming the problem."""
    text = " ".join(expression.split())
    fields = text.split(" ") if text else []
    if len(fields) not in (5, 6):
        raise InvalidSchedule(
            f"a schedule has 5 fields (minute hour day month weekday) or 6 with seconds first, "
            f"not {len(fields)}: {expression!r}"
        )
    seconds_first = len(fields) == 6
    try:
        croniter(text, second_at_beginning=seconds_first)
    except (ValueError, KeyError) as error:
        raise InvalidSchedule(f"invalid schedule {expression!r}: {error}") from None
    return text, seconds_first


def previous_fire(expression: str, now: datetime) -> datetime:
    text, seconds_first = parse_cron(expression)
    moment: datetime = croniter(text, now, second_at_beginning=seconds_first).get_prev(datetime)
    return moment


def next_fire(expression: str, now: datetime) -> datetime:
    text, seconds_first = parse_cron(expression)
    moment: datetime = croniter(text, now, second_at_beginning=seconds_first).get_next(datetime)
    return moment


@dataclass
class GCSettings:
    schedule: str = ""  # empty: no schedule
    duration: Duration = "untilDone"
    minutes: float | None = None  # with duration "minutes"
    mode: Mode = "online"
    deleteUntagged: bool = False

    def job_parameters(self, grace: timedelta) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "mode": self.mode,
            "deleteUntagged": self.deleteUntagged,
            "graceSeconds": grace.total_seconds(),
        }
        if self.duration == "minutes" and self.minutes:
            parameters["durationMinutes"] = self.minutes
        return parameters


class ScheduleService:
    def __init__(self, meta: MetadataStore, grace: timedelta) -> None:
        self.meta = meta
        self.grace = grace

    async def gc_settings(self) -> GCSettings:
        stored = await self.meta.jobs.get_setting(GC_SETTINGS) or {}
        return GCSettings(**stored)

    async def save_gc_settings(self, settings: GCSettings) -> GCSettings:
        if settings.schedule:
            settings.schedule = parse_cron(settings.schedule)[0]
        if settings.duration == "minutes" and not settings.minutes:
            raise InvalidSchedule('duration "minutes" needs "minutes": how many')
        await self.meta.jobs.put_setting(GC_SETTINGS, asdict(settings))
        return settings

    async def start_gc(self, settings: GCSettings) -> Job:
        return await self.meta.jobs.create("registryGC", settings.job_parameters(self.grace))

    async def fire_due(self, now: datetime, window: timedelta) -> Job | None:
        """Start the scheduled collection when its time came within ``window`` (once across
        replicas: the firing is recorded in the database). A duration of "never" keeps the
        schedule and starts nothing."""
        settings = await self.gc_settings()
        if not settings.schedule or settings.duration == "never":
            return None
        due = previous_fire(settings.schedule, now)
        if now - due > window:
            return None
        return await self.meta.jobs.fire_schedule(
            GC_SETTINGS, due, "registryGC", settings.job_parameters(self.grace)
        )
