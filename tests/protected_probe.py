"""Run by test_protected.py inside a network namespace of its own (``unshare --net``), where
this machine has one more address that is not a loopback one: a `wharf serve` listening on
every address of that namespace, asked the same requests from that address and from a
second loopback address. Nothing leaves the namespace, which ends with this process.

Usage: python -m tests.protected_probe DIRECTORY CONFIG_JSON; prints one JSON document:
the answers, by source address, and the server's log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from .server import WharfServer

OTHER = "198.51.100.7"  # TEST-NET-2: an address no network routes, here on this namespace's lo
LOOPBACK = "127.0.0.2"
REQUESTS = [
    ("GET", "/v2/"),
    ("HEAD", "/v2/"),
    ("GET", "/v2/library/app/tags/list"),
    ("POST", "/v2/library/app/blobs/uploads/"),
    ("GET", "/api/v0/jobs"),
    ("GET", "/healthz"),
]


def main(directory: Path, config: dict[str, object]) -> None:
    for command in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{OTHER}/32", "dev", "lo"]):
        subprocess.run(command, check=True)
    server = WharfServer(directory, config)
    server.config["http"]["addr"] = f"0.0.0.0:{server.port}"
    server.start()
    answers: dict[str, list[dict[str, object]]] = {}
    try:
        for source in (OTHER, LOOPBACK):
            transport = httpx.HTTPTransport(local_address=source)
            with httpx.Client(
                base_url=f"http://{OTHER}:{server.port}", transport=transport, timeout=30
            ) as client:
                answers[source] = []
                for method, path in REQUESTS:
                    response = client.request(method, path)
                    answers[source].append(
                        {
                            "request": f"{method} {path}",
                            "status": response.status_code,
                            "body": response.text,
                            "content-type": response.headers.get("content-type", ""),
                        }
                    )
    finally:
        server.stop()
    json.dump({"answers": answers, "log": server.log_path.read_text()}, sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]))
