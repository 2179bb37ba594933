"""A real CNCF Distribution (Debian's docker-registry) on a free loopback port, with a data
directory of the test's own."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import yaml

from .server import free_port


class Distribution:
    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.root = directory / "registry"
        self.port = free_port()
        self.config_path = directory / "distribution.yml"
        self.log_path = directory / "distribution.log"
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.root)}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Distribution:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{self.address}/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def garbage_collect(self, *args: str) -> str:
        result = subprocess.run(
            [self.binary, "garbage-collect", *args, str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout
