"""What garbage collection has done: the runs, newest first, and DTR's lastSavings."""

from __future__ import annotations

from ..errors import NO_GC_RUN, RegistryError
from ..meta.gc import GCRows, GCRun
from .access import AccessService
from .caller import Caller

# The most runs one answer lists.
MAX_RUNS = 500


class GCHistory:
    """A system administrator's to read."""

    def __init__(self, gc: GCRows, access: AccessService) -> None:
        self.gc = gc
        self.access = access

    async def runs(self, caller: Caller, limit: int) -> list[GCRun]:
        """The ``limit`` newest runs (at least one, at most MAX_RUNS), dry ones included."""
        self.access.require_admin(caller, "see garbage collection history")
        return await self.gc.runs(limit=max(1, min(limit, MAX_RUNS)))

    async def last_savings(self, caller: Caller) -> GCRun:
        """What the newest real (not dry) run that completed (done, or stopped part way)
        freed, however many other runs came after it; NO_GC_RUN before there is one."""
        self.access.require_admin(caller, "see garbage collection savings")
        run = await self.gc.last_savings()
        if run is None:
            raise RegistryError(NO_GC_RUN, {}, "no garbage collection has completed yet")
        return run
