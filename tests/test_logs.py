"""`log.formatter: json`: `wharf serve` writes JSON lines, with extra fields as keys."""

from __future__ import annotations

import json
import logging
import sys
import time

from wharf.config import LogConfig
from wharf.logs import JSONFormatter, logging_config


def test_serve_with_json_format_writes_json_lines(make_server):
    server = make_server({"log": {"formatter": "json", "level": "info"}})
    with server.client() as client:
        job = client.post("/api/v0/admin/jobs", json={"job": "registryGC", "parameters": {"dryRun": True}})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/api/v0/jobs/{job_id}").json()["status"] != "done":
            assert time.monotonic() < deadline, "the job did not end"
            time.sleep(0.1)
    server.stop()

    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line, the server's own included
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries), entries
    started = [e for e in entries if e["message"].startswith("wharf: serving on")]
    assert [(e["level"], e["logger"]) for e in started] == [("info", "wharf")]
    done = [e for e in entries if e.get("job_id") == job_id]
    assert [(e["action"], e["status"], e["logger"]) for e in done] == [("registryGC", "done", "wharf.jobs")]
    assert done[0]["time"].endswith("Z")


def test_text_stays_the_default():
    assert LogConfig().formatter == "text"
    config = logging_config(LogConfig())
    assert config["formatters"]["wharf"] == {"format": "%(levelname)s:%(name)s:%(message)s"}


def test_json_lines_carry_extra_fields_and_the_exception():
    record = logging.LogRecord("wharf.x", logging.ERROR, __file__, 1, "failed %s", ("twice",), None)
    record.job_id = "j1"
    record.detail = {"blobs": 3, "at": object()}
    try:
        raise ValueError("broken")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JSONFormatter().format(record))
    assert (entry["level"], entry["logger"], entry["message"], entry["job_id"]) == (
        "error",
        "wharf.x",
        "failed twice",
        "j1",
    )
    # What JSON cannot hold is written as its text, the rest as JSON.
    assert entry["detail"]["blobs"] == 3 and entry["detail"]["at"].startswith("<object object")
    assert "ValueError: broken" in entry["exception"]
