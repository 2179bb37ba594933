"""A real `wharf serve` process on a free loopback port, for tests to talk to."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class WharfServer:
    """One `wharf serve` process with its own data directory and configuration file."""

    def __init__(
        self, directory: Path, config: dict[str, Any] | None = None, server: str = "granian"
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.server = server
        storage: dict[str, Any] = {"fsync": False}
        if "s3" not in (config or {}).get("storage", {}):
            storage["filesystem"] = {"rootdirectory": str(directory / "data")}
        base = {"http": {"addr": f"127.0.0.1:{self.port}"}, "storage": storage, "log": {"level": "warning"}}
        self.config = deep_merge(base, config or {})
        # A file of the test's own, written as it is instead of config (which then only tells
        # where the data is): set it after construction, when the port is known.
        self.config_text: str | None = None
        self.config_path = directory / "config.yml"
        self.log_path = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        # With http.tls: the context clients verify the server's certificate with (and that
        # holds the certificate they present when the server asks for one).
        self.verify: ssl.SSLContext | bool = True
        # Credentials every client() sends unless told otherwise (the writer stack's).
        self.auth: httpx.Auth | None = None
        self.admin_auth: httpx.Auth | None = None  # a system administrator's, with auth on
        self.credentials: tuple[str, str] | None = None  # the user clients such as skopeo sign in as

    @property
    def url(self) -> str:
        scheme = "https" if self.config["http"].get("tls") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return str(self.config.get("database", {}).get("url") or f"sqlite:///{self.root / 'wharf.db'}")

    @property
    def root(self) -> Path:
        """The filesystem storage root (the default SQLite database lives there too)."""
        filesystem = self.config["storage"].get("filesystem", {})
        return Path(filesystem.get("rootdirectory", self.directory / "data"))

    def start(self) -> WharfServer:
        self.config_path.write_text(
            yaml.safe_dump(self.config) if self.config_text is None else self.config_text
        )
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("WHARF_") or k.startswith("WHARF_TEST_")
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wharf", "serve", "--server", self.server, str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own directory, never the checkout: whatever a default puts in the
                # working directory lands beside its configuration.
                cwd=self.directory,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"wharf serve exited with {self.process.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                # 401: a registry with auth on answers, and asks who is calling.
                answer = httpx.get(f"{self.url}/v2/", timeout=1, verify=self.verify)
                if answer.status_code in (200, 401):
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"wharf serve did not answer within 120 s:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # SIGTERM goes to the server alone, which stops its workers in order; anything
            # harsher goes to the whole group, as a crash would take the workers too.
            if sig == signal.SIGTERM:
                self.process.send_signal(sig)
            else:
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("auth", self.auth)
        return httpx.Client(base_url=self.url, timeout=60, verify=self.verify, **kwargs)
