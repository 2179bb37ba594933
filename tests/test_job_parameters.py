"""Pure rules: what a job is created with, and the garbage collection defaults every entry
point shares (services/gc_defaults.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from wharf.cli import garbage_collect
from wharf.config import Settings, parse_duration
from wharf.errors import RegistryError
from wharf.services import gc_defaults
from wharf.services.fsck import FsckOptions
from wharf.services.gc import GCOptions
from wharf.services.job_parameters import (
    FSCK,
    METADATA_MIGRATION,
    PURGE_UPLOADS,
    REGISTRY_GC,
    JobDefaults,
    complete_parameters,
)
from wharf.services.schedules import GCSettings

DEFAULTS = JobDefaults(grace="90m", purge_age="3h", purge_dry_run=True)


def test_a_collection_job_takes_the_shared_defaults_and_the_configured_grace():
    assert complete_parameters(REGISTRY_GC, None, DEFAULTS) == {
        "dryRun": gc_defaults.DRY_RUN,
        "deleteUntagged": gc_defaults.DELETE_UNTAGGED,
        "scanStorage": gc_defaults.SCAN_STORAGE,
        "mode": gc_defaults.MODE,
        "graceSeconds": 90 * 60,
    }
    given = {"graceSeconds": 0, "batchSize": 7, "mode": "readonly", "durationMinutes": 5}
    completed = complete_parameters(REGISTRY_GC, given, DEFAULTS)
    assert {key: completed[key] for key in given} == given


def test_other_jobs_take_their_configured_defaults():
    assert complete_parameters(PURGE_UPLOADS, {}, DEFAULTS) == {"age": "3h", "dryRun": True}
    assert complete_parameters(PURGE_UPLOADS, {"dryRun": False}, DEFAULTS) == {"age": "3h", "dryRun": False}
    assert complete_parameters(FSCK, {"repair": True}, DEFAULTS) == {"repair": True, "grace": "90m"}
    assert complete_parameters(METADATA_MIGRATION, None, DEFAULTS) == {}


@pytest.mark.parametrize(
    ("action", "given", "named"),
    [
        ("sweep", None, "unknown job 'sweep'; known: registryGC, purgeUploads, metadatastoremigration, fsck"),
        (REGISTRY_GC, {"batchSize": 0}, "invalid parameters for registryGC: parameters.batchSize"),
        (REGISTRY_GC, {"graceSeconds": "soon"}, "parameters.graceSeconds"),
        (REGISTRY_GC, {"colour": "red"}, "parameters.colour"),
        (PURGE_UPLOADS, {"age": "a while"}, "parameters.age"),
        (FSCK, {"grace": "1 fortnight"}, "parameters.grace"),
        (METADATA_MIGRATION, {"root": "a\x00b"}, "parameters.root"),
    ],
)
def test_a_job_that_does_not_fit_is_refused_naming_what_was_given(action, given, named):
    with pytest.raises(RegistryError) as refused:
        complete_parameters(action, given, DEFAULTS)
    assert refused.value.code.code == "INVALID_JOB"
    assert named in refused.value.message


def test_every_entry_point_takes_the_collection_defaults_from_one_place():
    assert parse_duration(gc_defaults.GRACE) == gc_defaults.GRACE_PERIOD
    assert Settings().gc.grace == gc_defaults.GRACE
    options = GCOptions()
    assert (options.grace, options.batch) == (gc_defaults.GRACE_PERIOD, gc_defaults.BATCH)
    assert (options.dry_run, options.delete_untagged, options.scan_storage) == (False, False, False)
    assert (FsckOptions().grace, FsckOptions().batch) == (gc_defaults.GRACE_PERIOD, gc_defaults.BATCH)
    settings = GCSettings()
    assert (settings.duration, settings.mode, settings.deleteUntagged) == (
        gc_defaults.DURATION,
        gc_defaults.MODE,
        gc_defaults.DELETE_UNTAGGED,
    )
    assert settings.job_parameters(timedelta(hours=2))["graceSeconds"] == 7200
    batch = next(p for p in garbage_collect.params if p.name == "batch_size")
    assert batch.default == gc_defaults.BATCH
