"""GC settings through the admin API: DTR's schedule and lastSavings, the settings document
with save-and-start, a schedule that fires within seconds, and cron parsing."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest

from wharf.services.schedules import InvalidSchedule, next_fire, parse_cron

from .oci import Image, error_codes, push_image

BASE = "/api/v0/admin/settings/registry/garbageCollection"


def test_cron_five_fields_or_six_with_seconds_first():
    assert next_fire("0 0 3 * * SAT", datetime(2026, 11, 22, tzinfo=UTC)) == datetime(
        2026, 11, 28, 3, 0, 0, tzinfo=UTC
    )
    assert next_fire("30 2 * * *", datetime(2026, 11, 22, 3, tzinfo=UTC)) == datetime(
        2026, 11, 23, 2, 30, tzinfo=UTC
    )
    assert next_fire("15 * * * * *", datetime(2026, 11, 22, 3, 0, 0, tzinfo=UTC)) == datetime(
        2026, 11, 22, 3, 0, 15, tzinfo=UTC
    )
    assert parse_cron("  0  3 * *   *") == ("0 3 * * *", False)


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("0 3 * *", "not 4"),
        ("61 * * * *", "61 * * * *"),
        ("0 0 3 * * FUNDAY", "FUNDAY"),
        ("", "not 0"),
        ("0 0 31 2 *", "never fires"),  # well formed, but 31 February never comes
    ],
)
def test_invalid_cron_names_the_problem(expression, named):
    with pytest.raises(InvalidSchedule) as error:
        parse_cron(expression)
    assert named in str(error.value)


def test_schedule_settings_and_last_savings_through_the_api(make_server):
    server = make_server({"jobs": {"poll": "0.2s"}, "gc": {"grace": "0s"}})
    with server.client() as client:
        assert client.get(f"{BASE}/lastSavings").status_code == 404
        bad = client.post(f"{BASE}/schedule", json={"schedule": "0 0 3 * * FUNDAY"})
        assert bad.status_code == 400 and error_codes(bad) == ["INVALID_SCHEDULE"]
        assert "FUNDAY" in bad.json()["errors"][0]["message"]

        saved = client.post(f"{BASE}/schedule", json={"schedule": "0 0 3 * * SAT"})
        assert saved.status_code == 200, saved.text
        settings = client.get(BASE).json()
        assert settings["schedule"] == "0 0 3 * * SAT"
        assert settings["nextRun"].endswith("T03:00:00Z")
        assert datetime.fromisoformat(settings["nextRun"]).weekday() == 5  # a Saturday

        needs_minutes = client.put(BASE, json={"schedule": "0 0 3 * * SAT", "duration": "minutes"})
        assert needs_minutes.status_code == 400

        image = Image.random()
        push_image(client, "lib/saved", image)
        assert client.delete(f"/v2/lib/saved/manifests/{image.digest}").status_code == 202
        document = {"schedule": "0 0 3 * * SAT", "duration": "minutes", "minutes": 30, "mode": "online"}
        started = client.put(BASE, params={"start": "true"}, json=document)
        assert started.status_code == 200, started.text
        job = started.json()["started"]
        assert job["parameters"]["durationMinutes"] == 30
        deadline = time.monotonic() + 120
        while client.get(f"/api/v0/jobs/{job['id']}").json()["status"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.2)

        savings = client.get(f"{BASE}/lastSavings").json()
        assert (savings["blobsDeleted"], savings["status"], savings["dryRun"]) == (3, "done", False)
        assert savings["bytesFreed"] == sum(len(blob) for blob in image.blobs)
        assert client.get(f"{BASE}/history").json()["runs"][0]["id"] == savings["id"]


def schedule_passes(client: httpx.Client) -> float:
    """How many times the server has looked for due schedules (its metric)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("wharf_schedule_passes_total "):
            return float(line.split()[1])
    raise AssertionError("no wharf_schedule_passes_total in /metrics")


def passes(client: httpx.Client, at_least: float) -> None:
    deadline = time.monotonic() + 120
    while schedule_passes(client) < at_least:
        assert time.monotonic() < deadline, f"the schedules were not looked at {at_least:.0f} times in 120 s"
        time.sleep(0.05)


def test_a_schedule_fires_within_seconds_and_never_keeps_it_without_running(make_server):
    server = make_server({"jobs": {"poll": "0.2s"}, "gc": {"grace": "0s"}})
    with server.client() as client:
        assert client.post(f"{BASE}/schedule", json={"schedule": "* * * * * *"}).status_code == 200
        deadline = time.monotonic() + 120
        while True:
            jobs = client.get("/api/v0/jobs", params={"action": "registryGC"}).json()["jobs"]
            if any(job["status"] == "done" for job in jobs):
                break
            assert time.monotonic() < deadline, jobs
            time.sleep(0.2)

        kept = client.put(BASE, json={"schedule": "* * * * * *", "duration": "never"})
        assert kept.status_code == 200 and kept.json()["nextRun"] is None
        # Once the firing task has looked twice since the change (a job fired just before it
        # is there by then), it looks five more times and fires nothing.
        passes(client, at_least=schedule_passes(client) + 2)
        count = len(client.get("/api/v0/jobs", params={"limit": 1000}).json()["jobs"])
        passes(client, at_least=schedule_passes(client) + 5)
        assert len(client.get("/api/v0/jobs", params={"limit": 1000}).json()["jobs"]) == count
        assert client.get(BASE).json()["schedule"] == "* * * * * *"
