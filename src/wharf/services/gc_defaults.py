"""A garbage collection's defaults, defined once. The configuration (``gc.grace``), the
command line (``--grace``, ``--batch-size``), a registryGC job's parameters, the settings
document and the collections its schedule starts, fsck's repair, and the engine's own
options all take them from here. Only the standard library is imported: the configuration
reads this module."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

# What was pushed, mounted or found by a HEAD this recently is never collected (invariant 2).
GRACE_HOURS = 24
GRACE = f"{GRACE_HOURS}h"  # as the configuration and --grace write it
GRACE_PERIOD = timedelta(hours=GRACE_HOURS)

# Blobs per critical section: a push of one of them waits for its batch at most.
BATCH = 500
MAX_BATCH = 1_000_000  # far more than any batch is worth, and an int64

# How a job (and a scheduled collection) runs: online, or with the registry read-only.
Mode = Literal["readonly", "online"]
MODE: Mode = "online"
# How long a scheduled collection may run: until done, a number of minutes, or not at all.
Duration = Literal["untilDone", "minutes", "never"]
DURATION: Duration = "untilDone"

DRY_RUN = False
DELETE_UNTAGGED = False
SCAN_STORAGE = False
