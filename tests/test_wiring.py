"""What the entry points build: one set of services for the HTTP layers and the job worker,
and nothing heavy for the command line's garbage collection."""

from __future__ import annotations

import os
import subprocess
import sys

from wharf.config import load_settings
from wharf.wiring import build_registry, build_runner

BUILD = """
import sys
from wharf.config import load_settings
from wharf.wiring import build_registry
registry = build_registry(load_settings(None))
print(sorted(m for m in ("croniter", "prometheus_client", "fastapi", "starlette") if m in sys.modules))
"""


def test_building_the_registry_loads_no_scheduler_metrics_or_web_stack(tmp_path):
    """`wharf garbage-collect` builds the registry too: its start stays quick although the
    registry now keeps the schedules and jobs services."""
    env = {**os.environ, "WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-c", BUILD], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_the_worker_fires_the_schedules_the_api_edits(tmp_path):
    settings = load_settings(None, {"WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path)})
    registry = build_registry(settings)
    try:
        assert build_runner(settings, registry).schedules is registry.schedules
        assert [p.name for p in registry.schedules.periodic] == ["uploadPurging"]
    finally:
        await registry.close()
