"""The protected mode of a registry with no authentication: clients on a loopback address are
served as before, every other client is answered 403 DENIED saying how to turn auth on, and
`wharf serve` says the same once.

A real non-loopback client needs an address of this machine that is not a loopback one:
the test makes one in a network namespace of its own (tests/protected_probe.py), so that
the server listens on every address there and nothing reaches any network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from wharf.services.authn import PROTECTED

from .protected_probe import LOOPBACK, OTHER, REQUESTS

REPO = Path(__file__).resolve().parent.parent


def probe(tmp_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The probe's answers and log, from its own network namespace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [
            "unshare",
            "--net",
            sys.executable,
            "-m",
            "tests.protected_probe",
            str(tmp_path),
            json.dumps(config),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_a_client_on_another_address_is_refused_and_loopback_ones_are_served(tmp_path):
    found = probe(tmp_path, {"http": {"workers": 2}})
    refused = {answer["request"]: answer for answer in found["answers"][OTHER]}
    for method, path in REQUESTS:
        answer = refused[f"{method} {path}"]
        if path == "/healthz":  # names no repository: open to load balancers
            assert answer["status"] == 200, answer
            continue
        assert answer["status"] == 403, answer
        if method == "HEAD":
            continue
        # /v2 and /api/v0 answer in their JSON shape, with the message.
        assert answer["content-type"] == "application/json", answer
        errors = json.loads(answer["body"])["errors"]
        assert [(e["code"], e["message"]) for e in errors] == [("DENIED", PROTECTED)], answer
    assert "auth.accounts.enabled: true" in PROTECTED and "auth.open: true" in PROTECTED

    served = {answer["request"]: answer["status"] for answer in found["answers"][LOOPBACK]}
    assert served == {
        "GET /v2/": 200,
        "HEAD /v2/": 200,
        "GET /v2/library/app/tags/list": 404,
        "POST /v2/library/app/blobs/uploads/": 202,
        "GET /api/v0/jobs": 200,
        "GET /healthz": 200,
    }
    # Listening where other machines can connect: a warning, once (not once per worker).
    told = [line for line in found["log"].splitlines() if PROTECTED in line]
    assert told == [f"WARNING:wharf.auth:{PROTECTED}"], found["log"]


def test_auth_open_serves_every_client_and_says_nothing(tmp_path):
    found = probe(tmp_path, {"auth": {"open": True}})
    statuses = {answer["request"]: answer["status"] for answer in found["answers"][OTHER]}
    assert statuses["GET /v2/"] == 200 and statuses["GET /api/v0/jobs"] == 200, found
    assert statuses["POST /v2/library/app/blobs/uploads/"] == 202
    assert PROTECTED not in found["log"]


def test_a_second_loopback_address_is_served_and_a_loopback_server_says_so_quietly(make_server):
    server = make_server({"log": {"level": "info"}, "http": {"workers": 2}})
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=server.url, transport=transport, timeout=30) as client:
        assert client.get("/v2/").status_code == 200
        assert client.get("/api/v0/jobs").status_code == 200
        assert client.post("/v2/library/app/blobs/uploads/").status_code == 202
    # Bound to 127.0.0.1, no other machine can connect: said once, at info.
    told = [line for line in server.log_path.read_text().splitlines() if PROTECTED in line]
    assert told == [f"INFO:wharf.auth:{PROTECTED}"], server.log_path.read_text()
