"""Garbage collection settings (schedule, duration, mode) and the cron schedules that start
jobs from them. Cron is UTC, five fields, or six with seconds first (``0 0 3 * * SAT`` is
Saturday 03:00:00), as DTR documents.

Built once for every entry point (the registry keeps it): croniter and the metrics are
imported when first used, so the command line's garbage collection does not load them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import INVALID_SCHEDULE, RegistryError
from ..meta.clock import now as utc_now
from ..meta.events import Event, EventLog
from ..meta.jobs import Job, JobStore
from . import gc_defaults
from .access import AccessService
from .caller import Caller
from .gc_defaults import Duration, Mode
from .job_parameters import REGISTRY_GC

if TYPE_CHECKING:
    from croniter import croniter

log = logging.getLogger("wharf.schedules")

GC_SETTINGS = "garbageCollection"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidSchedule(ValueError):
    pass


def _croniter(text: str, start: datetime | None, seconds_first: bool) -> croniter:
    from croniter import croniter

    return croniter(text, start, second_at_beginning=seconds_first)


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
        _croniter(text, None, seconds_first)
    except (ValueError, KeyError) as error:
        raise InvalidSchedule(f"invalid schedule {expression!r}: {error}") from None
    # A well-formed expression can still name no date at all (31 February): it would fail
    # every time a worker looked for what is due.
    try:
        _croniter(text, EPOCH, seconds_first).get_next(datetime)
    except ValueError:
        raise InvalidSchedule(f"schedule {expression!r} never fires: no date matches it") from None
    return text, seconds_first


def previous_fire(expression: str, now: datetime) -> datetime:
    text, seconds_first = parse_cron(expression)
    moment: datetime = _croniter(text, now, seconds_first).get_prev(datetime)
    return moment


def next_fire(expression: str, now: datetime) -> datetime:
    text, seconds_first = parse_cron(expression)
    moment: datetime = _croniter(text, now, seconds_first).get_next(datetime)
    return moment


@dataclass
class GCSettings:
    schedule: str = ""  # empty: no schedule
    duration: Duration = gc_defaults.DURATION
    minutes: float | None = None  # with duration "minutes"
    mode: Mode = gc_defaults.MODE
    deleteUntagged: bool = gc_defaults.DELETE_UNTAGGED

    def job_parameters(self, grace: timedelta) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "mode": self.mode,
            "deleteUntagged": self.deleteUntagged,
            "graceSeconds": grace.total_seconds(),
        }
        if self.duration == "minutes" and self.minutes:
            parameters["durationMinutes"] = self.minutes
        return parameters


@dataclass(frozen=True)
class Periodic:
    """A job started once in every ``every``-long slot of UTC time (slots start at the Unix
    epoch), whatever the number of replicas: like upload purging at its interval."""

    name: str  # the firings' name in the database
    action: str
    every: timedelta
    parameters: dict[str, Any] = field(default_factory=dict)

    def slot(self, now: datetime) -> datetime:
        """The start of the slot ``now`` falls in."""
        return EPOCH + self.every * ((now - EPOCH) // self.every)


class ScheduleService:
    """The GC settings document, and firing what is due: the GC schedule and the periodic
    jobs. ``clock`` is the time the firing goes by (tests move it instead of waiting)."""

    def __init__(
        self,
        jobs: JobStore,
        grace: timedelta,
        periodic: Sequence[Periodic] = (),
        clock: Callable[[], datetime] = utc_now,
        *,
        access: AccessService,
        events: EventLog,
    ) -> None:
        """``access``: the GC settings are a system administrator's to read and change;
        ``events``: where their changes are recorded, with who made them."""
        self.jobs = jobs
        self.access = access
        self.events = events
        self.grace = grace
        self.periodic = [job for job in periodic if job.every > timedelta(0)]
        self.clock = clock
        self._fired: dict[str, datetime] = {}  # the slot each periodic job was last fired for, here
        self._warned: frozenset[str] = frozenset()  # unknown keys already said in the log

    async def _stored_gc_settings(self) -> dict[str, Any]:
        return await self.jobs.get_setting(GC_SETTINGS) or {}

    async def gc_settings(self, caller: Caller) -> GCSettings:
        self.access.require_admin(caller, "see the garbage collection settings")
        return await self._current()

    async def save_gc_settings(self, caller: Caller, settings: GCSettings) -> GCSettings:
        """Saved as given, the schedule in its normal form; INVALID_SCHEDULE names what is
        wrong with it."""
        self.access.require_admin(caller, "change the garbage collection settings")
        try:
            saved = await self._save(settings)
        except InvalidSchedule as error:
            raise RegistryError(INVALID_SCHEDULE, {"schedule": settings.schedule}, str(error)) from None
        await self.events.record(Event(caller.name, "gc.settings", detail=asdict(saved)))
        return saved

    async def set_gc_schedule(self, caller: Caller, schedule: str) -> GCSettings:
        """DTR's schedule endpoint: the schedule alone changes ("" removes it)."""
        self.access.require_admin(caller, "change the garbage collection schedule")
        settings = await self._current()
        settings.schedule = schedule
        return await self.save_gc_settings(caller, settings)

    async def start_gc(self, caller: Caller, settings: GCSettings) -> Job:
        """A collection now, as ``settings`` say ("save and start")."""
        self.access.require_admin(caller, "start garbage collection")
        job = await self.jobs.create(REGISTRY_GC, settings.job_parameters(self.grace), created_by=caller.name)
        detail = {"job": job.id, "action": REGISTRY_GC}
        await self.events.record(Event(caller.name, "job.start", detail=detail))
        return job

    def next_gc_run(self, settings: GCSettings) -> datetime | None:
        """When the schedule next starts a collection: never without a schedule or with a
        duration of "never" (nor for a schedule saved before dates were checked)."""
        if not settings.schedule or settings.duration == "never":
            return None
        try:
            return next_fire(settings.schedule, utc_now())
        except ValueError:
            return None

    async def _current(self) -> GCSettings:
        """The stored document. Keys this version does not know (saved by a newer one, in a
        rolling upgrade) are left out with a warning: never an error, which would stop the
        schedule, and the API, for as long as the document stays."""
        stored = await self._stored_gc_settings()
        known = {f.name for f in fields(GCSettings)}
        unknown = frozenset(stored) - known
        if unknown and unknown != self._warned:
            log.warning(
                "the stored garbage collection settings have keys this version does not know, ignored: %s",
                ", ".join(sorted(unknown)),
            )
        self._warned = unknown
        return GCSettings(**{key: value for key, value in stored.items() if key in known})

    async def _save(self, settings: GCSettings) -> GCSettings:
        if settings.schedule:
            settings.schedule = parse_cron(settings.schedule)[0]
        if settings.duration == "minutes" and not settings.minutes:
            raise InvalidSchedule('duration "minutes" needs "minutes": how many')
        known = {f.name for f in fields(GCSettings)}
        # A newer version's keys are kept: saving here must not undo what it saved.
        kept = {k: v for k, v in (await self._stored_gc_settings()).items() if k not in known}
        await self.jobs.put_setting(GC_SETTINGS, {**kept, **asdict(settings)})
        return settings

    async def run(self, stop: asyncio.Event, poll: float) -> None:
        """Fire what is due every ``poll`` seconds until ``stop`` is set: a task of its own,
        so the firing never waits for a job to end. A failure is logged and tried again at
        the next poll, within the slot's window."""
        from ..metrics import SCHEDULE_PASSES

        window = timedelta(seconds=max(poll * 3, 10.0))
        while not stop.is_set():
            try:
                for job in await self.fire(self.clock(), window):
                    log.info("schedule started job %s (%s)", job.id, job.action)
            except Exception:
                log.exception("schedules: firing what is due failed")
            SCHEDULE_PASSES.inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)

    async def fire(self, now: datetime, window: timedelta) -> list[Job]:
        """Every job due at ``now``: the scheduled collection and the periodic jobs. One
        failing (a settings document that cannot be read) does not keep the others back."""
        started = []
        try:
            job = await self.fire_due(now, window)
        except Exception:
            log.exception("schedules: the garbage collection schedule could not be fired")
            job = None
        if job is not None:
            started.append(job)
        started.extend(await self.fire_periodic(now))
        return started

    async def fire_due(self, now: datetime, window: timedelta) -> Job | None:
        """Start the scheduled collection when its time came within ``window`` (once across
        replicas: the firing is recorded in the database, in the transaction that creates
        the job). A duration of "never" keeps the schedule and starts nothing."""
        settings = await self._current()
        if not settings.schedule or settings.duration == "never":
            return None
        try:
            due = previous_fire(settings.schedule, now)
        except ValueError:  # saved before it was checked: never fires, and blocks nothing
            return None
        if now - due > window:
            return None
        return await self.jobs.fire_schedule(
            GC_SETTINGS, due, "registryGC", settings.job_parameters(self.grace)
        )

    async def fire_periodic(self, now: datetime) -> list[Job]:
        """Start each periodic job not yet started in the current slot: the first replica to
        record the slot's firing (as a schedule firing) creates the job, the others nothing.
        A replica starting in the middle of a slot fires it at once if no one did."""
        started = []
        for periodic in self.periodic:
            slot = periodic.slot(now)
            if self._fired.get(periodic.name) == slot:
                continue  # already recorded from here: no write every poll
            job = await self.jobs.fire_schedule(periodic.name, slot, periodic.action, periodic.parameters)
            self._fired[periodic.name] = slot
            if job is not None:
                started.append(job)
        return started
