#!/usr/bin/env python3
"""Slow and idle clients against a registry: how long a normal push and pull take while N
connections hold a blob upload's headers and withhold its body (``body``), or send their
headers one byte a second (``headers``).

Starts the registry itself on a free loopback port with a temporary data directory:

    .venv/bin/python bench/slowclients.py --target granian|uvicorn|distribution
        [--held 0,1100,2000] [--mode body|headers] [--deadline 60] [--config-set KEY=VALUE]

Prints one line per held count: the seconds a push (POST, PUT of a 1 MiB blob, PUT of a
manifest) and a pull (GET of both) took, or "no answer" when the deadline passed, and how
many held connections the server had closed when the push and pull had finished.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from wharf.testing.slowclients import SlowClients, raise_fd_limit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def start(target: str, directory: Path, extra: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config_path = directory / "config.yml"
    if target == "distribution":
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error"},
            "storage": {"filesystem": {"rootdirectory": str(directory / "data")}},
            "http": {"addr": f"127.0.0.1:{port}"},
        }
        command = ["docker-registry", "serve", str(config_path)]
    else:
        config = {
            "http": {"addr": f"127.0.0.1:{port}"},
            "storage": {"filesystem": {"rootdirectory": str(directory / "data")}, "fsync": False},
            "log": {"level": "error"},
            "jobs": {"enabled": False},
        }
        for key, value in extra.items():
            node = config
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = yaml.safe_load(value)
        command = [sys.executable, "-m", "wharf", "serve", "--server", target, str(config_path)]
    config_path.write_text(yaml.safe_dump(config))
    log = (directory / "server.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                return process, port
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{target} did not start:\n{(directory / 'server.log').read_text()}")


def push_and_pull(port: int, tag: str, deadline: float) -> tuple[float | None, float | None]:
    """Seconds for a push and for a pull, each None when it got no answer within deadline."""
    base = f"http://127.0.0.1:{port}/v2/bench/slow"
    layer = os.urandom(1 << 20)
    config = json.dumps({"tag": tag}).encode()
    digests = [f"sha256:{hashlib.sha256(b).hexdigest()}" for b in (layer, config)]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digests[1],
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digests[0],
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    timings: list[float | None] = []
    with httpx.Client(timeout=deadline) as client:
        began = time.monotonic()
        try:
            for body, digest in ((layer, digests[0]), (config, digests[1])):
                started = client.post(f"{base}/blobs/uploads/")
                location = httpx.URL(base).join(started.headers["location"])
                done = client.put(
                    location.copy_merge_params({"digest": digest}),
                    content=body,
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert done.status_code == 201, done.text
            put = client.put(f"{base}/manifests/{tag}", content=manifest, headers={"Content-Type": MANIFEST})
            assert put.status_code == 201, put.text
            timings.append(time.monotonic() - began)
        except httpx.TransportError:
            return None, None
        began = time.monotonic()
        try:
            got = client.get(f"{base}/manifests/{tag}", headers={"Accept": MANIFEST})
            assert got.content == manifest
            blob = client.get(f"{base}/blobs/{digests[0]}")
            assert blob.content == layer
            timings.append(time.monotonic() - began)
        except httpx.TransportError:
            timings.append(None)
    return timings[0], timings[1]


def show(seconds: float | None) -> str:
    return "no answer" if seconds is None else f"{seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=["granian", "uvicorn", "distribution"], default="granian")
    parser.add_argument("--held", default="0,1100,2000", help="comma-separated numbers of held connections")
    parser.add_argument("--mode", choices=["body", "headers"], default="body")
    parser.add_argument(
        "--request",
        choices=["patch", "monolithic"],
        default="patch",
        help="body mode: PATCH upload sessions started first, or a monolithic POST ?digest=",
    )
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds a normal request may take")
    parser.add_argument(
        "--config-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Wharf configuration key, e.g. http.timeouts.idle=5s",
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.config_set)
    raise_fd_limit(65536)
    directory = Path(tempfile.mkdtemp(prefix="wharf-slow-"))
    process, port = start(args.target, directory, extra)
    try:
        request = f" ({args.request})" if args.mode == "body" else ""
        print(f"# {args.target}, {args.mode} mode{request}, deadline {args.deadline:.0f} s {extra or ''}")
        for round_, held in enumerate(int(n) for n in args.held.split(",")):
            attackers = SlowClients("127.0.0.1", port, sessions=args.request == "patch", **{args.mode: held})
            with attackers:
                time.sleep(1.0)  # let the server take them in
                push, pull = push_and_pull(port, f"r{round_}", args.deadline)
                closed = attackers.wait_closed(time.monotonic())
                print(
                    f"held {held:5d} (connected {len(attackers.sockets)}, refused {attackers.refused}): "
                    f"push {show(push)}, pull {show(pull)}; closed by the server so far: {closed}",
                    flush=True,
                )
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
