"""Metrics shared by the server's worker processes (prometheus_client's multiprocess mode).

Kept apart from wharf.metrics on purpose: the directory must be in the environment before
any process imports prometheus_client, and the workers are forked from the process that
calls this."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics(workers: int) -> None:
    """With several workers, a fresh directory where each writes its metrics, so that a
    scrape answered by any of them adds up all of them; removed when this process exits. A
    directory given in the environment is used as it is (empty it before each start)."""
    if workers <= 1 or os.environ.get(VARIABLE):
        return
    directory = tempfile.mkdtemp(prefix="wharf-metrics-")
    os.environ[VARIABLE] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
