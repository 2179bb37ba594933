#!/usr/bin/env python3
"""Garbage collection, Wharf against CNCF Distribution 2.8, on the same content.

Pushes the same images (N repositories x M images, each a config and 5 layers under an OCI
manifest, some layers shared) into `wharf serve` and Debian's `docker-registry serve` with
the same client, deletes the same manifests by digest in both, stops both, snapshots both
data directories, then times each one's `garbage-collect` CLI (dry run and real, plain and
with --delete-untagged), restoring the snapshot before every run. After each real run the
blob files left on disk are compared with the expected live and garbage sets; the dry runs'
"blob eligible for deletion" lines are compared with the expected garbage set. See
bench/README.md ("Garbage collection").

    .venv/bin/python bench/gc.py [--size small|large] [--runs N] [--threads N] [--profile DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from run import DistributionServer, Server, WharfServer, distribution_version, log, wharf_revision

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SIZES = {
    "tiny": (4, 10),
    "small": (50, 40),
    "large": (200, 50),
}  # tiny: a smoke test  # repositories, images per repository
LAYERS = 5  # per image: a repository base layer, a layer shared by a pair of images, 3 own
BLOB_MIN, BLOB_MAX = 200, 2000  # bytes per random blob
HTTP_TIMEOUT = 120.0
BLOBS_DIR = Path("docker/registry/v2/blobs")
ELIGIBLE = re.compile(r"blob eligible for deletion: (sha256:[0-9a-f]{64})")
# Wharf: "N blobs marked, M blobs eligible for deletion"; Distribution 2.8 adds "and K manifests".
COUNTS = re.compile(r"(\d+) blobs marked, (\d+) blobs (?:and \d+ manifests )?eligible for deletion")


# -- content -----------------------------------------------------------------------------------


@dataclass
class Image:
    repo: str
    index: int
    tag: str | None  # None: pushed by digest only (untagged)
    blobs: list[str]  # config first, then the layers
    manifest: bytes
    digest: str = ""

    def __post_init__(self) -> None:
        self.digest = sha256(self.manifest)


@dataclass
class Content:
    """Every repository's blobs (in push order) and images, and the deletion sets."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    repos: dict[str, list[str]] = field(default_factory=dict)  # repo -> blob digests, push order
    images: list[Image] = field(default_factory=list)
    untagged: set[str] = field(default_factory=set)  # manifest digests pushed by digest only
    deleted: dict[int, list[Image]] = field(default_factory=dict)  # percent -> images deleted

    def layer_blobs(self, images: Iterable[Image]) -> set[str]:
        return {d for image in images for d in image.blobs}

    def expected(self, percent: int, untagged: bool) -> Expected:
        gone = {image.digest for image in self.deleted[percent]}
        if untagged:
            gone |= self.untagged
        live_images = [image for image in self.images if image.digest not in gone]
        live = self.layer_blobs(live_images)
        return Expected(
            live=live,
            garbage=set(self.blobs) - live,
            manifests_live={image.digest for image in live_images},
            manifests_gone=gone,
        )


@dataclass
class Expected:
    live: set[str]  # layer and config blobs that must stay
    garbage: set[str]  # layer and config blobs that must go
    manifests_live: set[str]
    manifests_gone: set[str]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_content(repos: int, per_repo: int, untagged_pct: int, seed: int) -> Content:
    """Deterministic: the same seed gives the same bytes, images and deletion sets."""
    rng = random.Random(seed)
    content = Content()

    def blob() -> str:
        data = rng.randbytes(rng.randint(BLOB_MIN, BLOB_MAX))
        digest = sha256(data)
        content.blobs[digest] = data
        return digest

    for r in range(repos):
        repo = f"gcbench/repo{r:03d}"
        order = [blob()]  # the repository's base layer, in every image of it
        base = order[0]
        pair = ""
        for i in range(per_repo):
            if i % 2 == 0:
                pair = blob()  # shared by images 2k and 2k+1
                order.append(pair)
            own = [blob() for _ in range(LAYERS - 2)]
            nonce = rng.randbytes(8).hex()
            config = json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "config": {"Labels": {"bench": nonce}},
                },
                sort_keys=True,
            ).encode()
            config_digest = sha256(config)
            content.blobs[config_digest] = config
            order += [*own, config_digest]
            layers = [base, pair, *own]
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {
                        "mediaType": OCI_CONFIG,
                        "digest": config_digest,
                        "size": len(config),
                    },
                    "layers": [
                        {"mediaType": OCI_LAYER, "digest": d, "size": len(content.blobs[d])} for d in layers
                    ],
                },
                indent=3,
            ).encode()
            content.images.append(Image(repo, i, f"v{i}", [config_digest, *layers], manifest))
        content.repos[repo] = order

    # One shuffle decides everything: the first 10% are deleted (the first 1% of all images
    # are a subset of them), the next untagged_pct% are pushed by digest only.
    shuffled = list(content.images)
    rng.shuffle(shuffled)
    total = len(shuffled)
    for percent in (1, 10):
        content.deleted[percent] = shuffled[: total * percent // 100]
    start = total * 10 // 100
    for image in shuffled[start : start + total * untagged_pct // 100]:
        image.tag = None
        content.untagged.add(image.digest)
    return content


# -- client ------------------------------------------------------------------------------------


class HTTPFailure(Exception):
    pass


class Client:
    """One persistent HTTP/1.1 connection; the same code talks to both registries."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)

    def call(
        self,
        method: str,
        path: str,
        codes: tuple[int, ...],
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        for attempt in (1, 2):
            try:
                self.conn.request(
                    method, path, body=body, headers={"Content-Length": str(len(body)), **(headers or {})}
                )
                response = self.conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                self.conn.close()  # a server closing an idle keep-alive: reconnect once
                if attempt == 2:
                    raise
        if response.status not in codes:
            raise HTTPFailure(f"{method} {path}: expected {codes}, got {response.status}: {data[:300]!r}")
        return response

    def push_blob(self, repo: str, digest: str, data: bytes) -> None:
        """POST a session, then PUT ?digest= with the whole body (what docker push does)."""
        location = self.call("POST", f"/v2/{repo}/blobs/uploads/", (202,)).getheader("Location") or ""
        parts = urlsplit(location)
        path = parts.path + ("?" + parts.query if parts.query else "")
        path += ("&" if "?" in path else "?") + urlencode({"digest": digest})
        self.call("PUT", path, (201,), data, {"Content-Type": "application/octet-stream"})

    def put_manifest(self, repo: str, reference: str, payload: bytes) -> None:
        self.call("PUT", f"/v2/{repo}/manifests/{reference}", (201,), payload, {"Content-Type": OCI_MANIFEST})

    def delete_manifest(self, repo: str, digest: str) -> None:
        self.call("DELETE", f"/v2/{repo}/manifests/{digest}", (202,))

    def close(self) -> None:
        self.conn.close()


def in_parallel(port: int, threads: int, jobs: list[Any], work: Callable[[Client, Any], None]) -> None:
    """Run work(client, job) for every job on `threads` threads, each with its own connection."""
    local = threading.local()
    clients: list[Client] = []
    lock = threading.Lock()

    def one(job: Any) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = Client(port)
            with lock:
                clients.append(client)
        work(client, job)

    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for future in concurrent.futures.as_completed([pool.submit(one, job) for job in jobs]):
                future.result()
    finally:
        for client in clients:
            client.close()


def push_all(server: Server, content: Content, threads: int) -> float:
    """Every repository's blobs then its manifests, one repository per job; seconds taken."""
    by_repo: dict[str, list[Image]] = {}
    for image in content.images:
        by_repo.setdefault(image.repo, []).append(image)

    def push_repo(client: Client, repo: str) -> None:
        for digest in content.repos[repo]:
            client.push_blob(repo, digest, content.blobs[digest])
        for image in by_repo[repo]:
            client.put_manifest(repo, image.tag or image.digest, image.manifest)

    began = time.monotonic()
    in_parallel(server.port, threads, list(content.repos), push_repo)
    return time.monotonic() - began


def delete_all(server: Server, images: list[Image], threads: int) -> float:
    began = time.monotonic()
    in_parallel(server.port, threads, images, lambda c, image: c.delete_manifest(image.repo, image.digest))
    return time.monotonic() - began


# -- on disk -----------------------------------------------------------------------------------


def blob_files(root: Path) -> set[str]:
    """Digests of every blob file (<root>/docker/registry/v2/blobs/<alg>/<xx>/<hex>/data)."""
    found: set[str] = set()
    base = root / BLOBS_DIR
    if not base.is_dir():
        return found
    for algorithm in os.scandir(base):
        for prefix in os.scandir(algorithm.path):
            for entry in os.scandir(prefix.path):
                if os.path.exists(os.path.join(entry.path, "data")):
                    found.add(f"{algorithm.name}:{entry.name}")
    return found


def copy_tree(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


def verify(root: Path, expected: Expected, all_manifests: set[str]) -> dict[str, int]:
    present = blob_files(root)
    layer = present - all_manifests
    return {
        "garbage": len(expected.garbage),
        "removed": len(expected.garbage - layer),
        "live": len(expected.live),
        "lost": len(expected.live - layer),
        "unknown": len(layer - expected.live - expected.garbage),
        "payloads_gone": len(expected.manifests_gone),
        "payloads_removed": len(expected.manifests_gone - present),
        "payloads_live": len(expected.manifests_live),
        "payloads_live_kept": len(expected.manifests_live & present),
    }


def describe_check(check: dict[str, int], payloads: bool) -> str:
    pct = 100.0 * check["removed"] / check["garbage"] if check["garbage"] else 100.0
    text = f"{check['removed']}/{check['garbage']} removed ({pct:.0f}%), {check['lost']} live lost"
    if check["unknown"]:
        text += f", {check['unknown']} unknown files"
    if payloads:
        text += (
            f"; payloads {check['payloads_removed']}/{check['payloads_gone']} removed, "
            f"{check['payloads_live'] - check['payloads_live_kept']} live lost"
        )
    elif check["payloads_live_kept"] or check["payloads_gone"] - check["payloads_removed"]:
        text += f"; {check['payloads_live_kept']} payload files present"
    return text


def describe_dry(output: str, expected: Expected, all_manifests: set[str], payloads: bool) -> str:
    """The dry run's eligible set against the expected garbage (and manifest payloads)."""
    eligible = set(ELIGIBLE.findall(output))
    counts = COUNTS.search(output)
    layer = eligible - all_manifests
    ok = layer == expected.garbage
    text = f"{len(layer)} layer+config eligible, {'= expected' if ok else 'DIFFERS from expected'}"
    if not ok:
        text += f" ({len(expected.garbage - layer)} missing, {len(layer - expected.garbage)} extra)"
    manifests = eligible & all_manifests
    if payloads:
        same = manifests == expected.manifests_gone
        text += f"; {len(manifests)} payloads, {'= expected' if same else 'DIFFERS from expected'}"
    elif manifests:
        text += f"; {len(manifests)} payloads"
    if counts:
        text += f" (summary: {counts.group(1)} marked, {counts.group(2)} eligible)"
    else:
        text += " (no 'N blobs marked, M blobs eligible' line)"
    return text


# -- timed runs --------------------------------------------------------------------------------


@dataclass
class Timed:
    seconds: float
    lines: int
    output: str
    spawned: float = 0.0  # time.time() at the spawn (after the sync)


COLD = {"on": False}  # --cold: the page cache is emptied before every timed run


def drop_caches() -> None:
    """Empty the kernel's page, dentry and inode caches (root only): the run then reads its
    data, its directories and its program from the disk, as the first run of the night does."""
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as error:
        raise SystemExit(f"--cold needs root (writing /proc/sys/vm/drop_caches): {error}") from None


def timed(command: list[str], env: dict[str, str]) -> Timed:
    """Wall clock from spawn to exit, its output (stdout and stderr) read from a pipe."""
    os.sync()
    if COLD["on"]:
        drop_caches()
    spawned = time.time()
    began = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    out, _ = process.communicate()
    seconds = time.perf_counter() - began
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{text[-3000:]}")
    return Timed(seconds, text.count("\n"), text, spawned)


@dataclass(frozen=True)
class Variant:
    label: str  # the row's scenario text for this Wharf variant
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    """One state, one Distribution command, one or more Wharf variants; rows = variants."""

    key: str
    percent: int  # of images deleted
    untagged: bool  # --delete-untagged
    dry: bool
    variants: tuple[Variant, ...]


def groups(size: str) -> list[Group]:
    real = (
        Variant("", ()),
        Variant("Wharf --quiet", ("--quiet",)),
        Variant("Wharf --quiet --scan-storage", ("--quiet", "--scan-storage")),
    )
    return [
        Group("dry", 10, False, True, (Variant("", ()), Variant("Wharf --quiet", ("--quiet",)))),
        Group("gc", 10, False, False, real),
        Group("dry-m", 10, True, True, (Variant("", ()),)),
        Group("gc-m", 10, True, False, real),
        Group("gc-1pct", 1, False, False, real),
    ]


def group_title(group: Group) -> str:
    kind = "dry run" if group.dry else "GC"
    return f"{kind}{' --delete-untagged' if group.untagged else ''}, {group.percent}% deleted"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.wharf_bin = str(Path(sys.executable).parent / "wharf")

    def wharf_command(self, server: Server, group: Group, flags: tuple[str, ...]) -> list[str]:
        command = [self.wharf_bin, "garbage-collect", "--grace", "0s"]
        command += ["--dry-run"] * group.dry + ["--delete-untagged"] * group.untagged + list(flags)
        return [*command, str(server.config_path)]

    def distribution_command(self, server: Server, group: Group) -> list[str]:
        command = [self.args.distribution_bin, "garbage-collect"]
        command += ["--dry-run"] * group.dry + ["--delete-untagged"] * group.untagged
        return [*command, str(server.config_path)]


def run_size(bench: Bench, size: str, results: list[dict[str, Any]], setup: dict[str, Any]) -> None:
    args = bench.args
    repos, per_repo = SIZES[size]
    began = time.monotonic()
    content = make_content(repos, per_repo, args.untagged_pct, args.seed)
    manifests = {image.digest for image in content.images}
    log(
        f"[{size}] {repos} repositories x {per_repo} images: {len(content.blobs)} layer+config blobs, "
        f"{len(manifests)} manifests ({len(content.untagged)} pushed by digest only), "
        f"generated in {time.monotonic() - began:.1f} s"
    )
    base = bench.workdir / size
    distribution = DistributionServer(base / "distribution", args.distribution_bin)
    wharf = WharfServer(base / "wharf", "granian", args.wharf_workers, False)
    servers = [distribution, wharf]
    snapshots = base / "snapshots"
    info: dict[str, Any] = {"blobs": len(content.blobs), "manifests": len(manifests)}
    try:
        for server in servers:
            server.start()
            log(f"[{size}] {server.name} on 127.0.0.1:{server.port}")
        for server in servers:
            seconds = push_all(server, content, args.threads)
            requests = 2 * len(content.blobs) + len(manifests)
            info[f"push_{server.name}"] = seconds
            rate = requests / seconds
            log(f"[{size}] pushed into {server.name} in {seconds:.1f} s ({rate:,.0f} requests/s)")
        done: set[str] = set()
        for percent in (1, 10):
            batch = [image for image in content.deleted[percent] if image.digest not in done]
            done |= {image.digest for image in batch}
            for server in servers:
                server.check_alive()
                seconds = delete_all(server, batch, args.threads)
                log(f"[{size}] deleted {len(batch)} manifests in {server.name} in {seconds:.1f} s")
            for server in servers:
                server.stop()
            for server in servers:
                target = snapshots / f"{percent}" / server.name
                target.parent.mkdir(parents=True, exist_ok=True)
                copy_tree(server.directory / "data", target)
            if percent != 10:
                for server in servers:
                    server.start()
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        files = blob_files(snapshots / "10" / server.name)
        info[f"files_{server.name}"] = len(files)
        log(f"[{size}] {server.name} snapshot: {len(files)} blob files")
    setup[size] = info

    def restore(server: Server, percent: int) -> float:
        began = time.monotonic()
        copy_tree(snapshots / f"{percent}" / server.name, server.directory / "data")
        return time.monotonic() - began

    for group in groups(size):
        expected = content.expected(group.percent, group.untagged)
        dist_times: list[float] = []
        wharf_times: dict[Variant, list[float]] = {v: [] for v in group.variants}
        checks: dict[str, set[str]] = {}
        lines: dict[str, int] = {}
        for rep in range(args.runs):
            # Alternate who goes first, so drift on a shared machine hits both alike.
            order: list[tuple[Server, Variant | None]] = [(distribution, None)]
            order += [(wharf, v) for v in group.variants]
            if rep % 2:
                order.reverse()
            for server, variant in order:
                restore(server, group.percent)
                if variant is None:
                    result = timed(bench.distribution_command(server, group), server.environment())
                    dist_times.append(result.seconds)
                    name = "Distribution"
                else:
                    result = timed(bench.wharf_command(server, group, variant.flags), server.environment())
                    wharf_times[variant].append(result.seconds)
                    name = f"Wharf{' ' + ' '.join(variant.flags) if variant.flags else ''}"
                lines[name] = result.lines
                payloads = variant is None
                if group.dry:
                    if not variant or not variant.flags:  # --quiet prints no eligible lines
                        checks.setdefault(name, set()).add(
                            describe_dry(result.output, expected, manifests, payloads)
                        )
                else:
                    check = verify(server.directory / "data", expected, manifests)
                    checks.setdefault(name, set()).add(describe_check(check, payloads))
                log(
                    f"[{size}] {group_title(group)} run {rep + 1}/{args.runs}: {name} "
                    f"{result.seconds:.2f} s, {result.lines} lines of output"
                )
        dist_median = statistics.median(dist_times)
        for variant in group.variants:
            name = f"Wharf{' ' + ' '.join(variant.flags) if variant.flags else ''}"
            mine = statistics.median(wharf_times[variant])
            results.append(
                {
                    "size": size,
                    "group": group.key,
                    "scenario": group_title(group) + (f" ({variant.label})" if variant.label else ""),
                    "distribution": dist_times,
                    "wharf": wharf_times[variant],
                    "distribution_median": dist_median,
                    "wharf_median": mine,
                    "ratio": mine / dist_median,
                    "distribution_check": " / ".join(sorted(checks.get("Distribution", {"-"}))),
                    "wharf_check": " / ".join(sorted(checks.get(name, {"(no eligible lines with --quiet)"}))),
                    "distribution_lines": lines.get("Distribution", 0),
                    "wharf_lines": lines.get(name, 0),
                }
            )
    if args.profile:
        profile(bench, size, wharf, content, restore, Path(args.profile))


# -- profiling ---------------------------------------------------------------------------------

# Runs Wharf's GC in-process the way `wharf garbage-collect` does, with every store call of the
# engine wrapped in a timer, and prints the phases as JSON (a PHASES line). What happens after
# `registry.close()` is stamped too (an EXIT line, printed by the last atexit callback):
# asyncio.run's teardown (its default executor's threads joined), threading's shutdown
# (ThreadPoolExecutor threads joined), the atexit callbacks; the rest, up to the exit the
# parent sees, is the interpreter freeing modules and objects.
PHASES_DRIVER = r"""
import time
T0 = time.time()
import atexit, json, sys
STAMPS = {}
def _print_stamps():
    STAMPS["atexit callbacks done"] = time.time()
    print("EXIT " + json.dumps(STAMPS), flush=True)
atexit.register(_print_stamps)  # registered first: runs last
import asyncio, threading
from datetime import timedelta
import wharf.services.gc as gcmod
try:
    from wharf.wiring import build_registry  # what `wharf garbage-collect` imports (no web stack)
except ImportError:
    from wharf.app import build_registry
from wharf.cli import _prepare_database, _settings
from wharf.services.gc import GCOptions
T_IMPORTS = time.time()
config, dry, untagged, quiet, scan = sys.argv[1], *(a == "1" for a in sys.argv[2:6])
settings = _settings(config)
_prepare_database(settings)
T_SETTINGS = time.time()
spent = {}

def timer(name, fn):
    async def wrapped(*a, **k):
        began = time.perf_counter()
        try:
            return await fn(*a, **k)
        finally:
            calls, total = spent.get(name, (0, 0.0))
            spent[name] = (calls + 1, total + time.perf_counter() - began)
    return wrapped

original_mark = gcmod.mark
def mark(*a, **k):
    began = time.perf_counter()
    try:
        return original_mark(*a, **k)
    finally:
        spent["mark() in Python"] = (1, time.perf_counter() - began)
gcmod.mark = mark

printed = [0.0]
def say(line):
    if not quiet:
        began = time.perf_counter()
        print(line)
        printed[0] += time.perf_counter() - began

async def main():
    registry = build_registry(settings)
    t_built = time.time()
    gc = registry.gc
    timed = {"gc": ("manifests", "listing", "manifest_queue", "manifests_around", "blob_candidates",
                    "pending", "delete_manifests", "delete_blobs", "forget_reviewed", "forget_pending",
                    "save_run"),
             "blobs": ("present", "count"), "events": ("record",)}
    for domain, names in timed.items():
        rows = getattr(gc.meta, domain, None)  # None: a Wharf from before the store's split
        for name in names:
            if hasattr(rows, name):
                setattr(rows, name, timer(f"meta.{domain}.{name}", getattr(rows, name)))
    for name in ("delete_many", "describe"):
        if hasattr(gc.storage, name):
            setattr(gc.storage, name, timer("storage." + name, getattr(gc.storage, name)))
    if hasattr(gc, "_orphans"):
        gc._orphans = timer("storage scan (_orphans)", gc._orphans)
    options = GCOptions(dry_run=dry, delete_untagged=untagged, grace=timedelta(0), scan_storage=scan,
                        mode="offline", verbose=not quiet, batch=500)
    began = time.time()
    try:  # since services take a caller; older revisions ran without one
        from wharf.services.caller import COMMAND_LINE, Caller
    except ImportError:
        outcome = await gc.run(options, say)
    else:
        outcome = await gc.run(Caller.local(COMMAND_LINE), options, say)
    ended = time.time()
    await registry.close()
    closed = time.time()
    sys.stdout.flush()
    phases = {"imports": T_IMPORTS - T0, "settings + migration check": T_SETTINGS - T_IMPORTS,
              "build_registry": t_built - T_SETTINGS, "gc.run": ended - began, "close": closed - ended,
              "printing (say)": printed[0]}
    print("PHASES " + json.dumps({"t0": T0, "exit": closed, "phases": phases,
                                  "calls": {k: list(v) for k, v in spent.items()},
                                  "blobs_deleted": outcome.run.blobs_deleted}))
    STAMPS["registry closed"] = closed
asyncio.run(main())
STAMPS["asyncio.run returned"] = time.time()
STAMPS["threads left"] = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
threading._register_atexit(lambda: STAMPS.__setitem__("threading shutdown began", time.time()))
atexit.register(lambda: STAMPS.__setitem__("atexit callbacks began", time.time()))  # registered last: first
"""


def exit_steps(output: str, closed: float, exited: float) -> str:
    """The driver's EXIT stamps as the time each step after registry.close() took."""
    line = next((x for x in reversed(output.splitlines()) if x.startswith("EXIT ")), None)
    if line is None:
        return "no EXIT line"
    stamps = json.loads(line[len("EXIT ") :])
    steps = [
        ("asyncio.run teardown", "asyncio.run returned"),
        ("until threading shutdown", "threading shutdown began"),
        ("threading shutdown (thread joins)", "atexit callbacks began"),
        ("atexit callbacks", "atexit callbacks done"),
    ]
    parts, last = [], closed
    for label, key in steps:
        if key in stamps:
            parts.append(f"{label} {stamps[key] - last:.3f}")
            last = stamps[key]
    parts.append(f"interpreter teardown {exited - last:.3f}")
    pools: dict[str, int] = {}
    for name in stamps.get("threads left") or []:
        pool = re.sub(r"_\d+$", "", name)  # ThreadPoolExecutor names its threads <prefix>_<n>
        pools[pool] = pools.get(pool, 0) + 1
    alive = ", ".join(f"{pool} x{n}" for pool, n in sorted(pools.items())) or "none"
    parts.append(f"threads alive after asyncio.run: {alive}")
    return ", ".join(parts)


def profile(
    bench: Bench,
    size: str,
    wharf: WharfServer,
    content: Content,
    restore: Callable[[Server, int], float],
    out: Path,
) -> None:
    """Per-phase timings (in-process driver) and py-spy profiles of Wharf's GC."""
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    env = wharf.environment()
    report: list[str] = []
    cases = [  # name, percent deleted, dry, --delete-untagged, --quiet, --scan-storage
        ("gc", 10, False, False, False, False),
        ("gc-quiet", 10, False, False, True, False),
        ("gc-quiet-scan", 10, False, False, True, True),
        ("gc-m-quiet", 10, False, True, True, False),
        ("gc-1pct-quiet", 1, False, False, True, False),
        ("dry-quiet", 10, True, False, True, False),
    ]
    for name, percent, dry, untagged, quiet, scan in cases:
        restore(wharf, percent)
        flags = ["1" if x else "0" for x in (dry, untagged, quiet, scan)]
        result = timed([python, "-c", PHASES_DRIVER, str(wharf.config_path), *flags], env)
        began = result.spawned  # not before timed(): its os.sync() can take seconds on a disk
        line = next(x for x in reversed(result.output.splitlines()) if x.startswith("PHASES "))
        data = json.loads(line[len("PHASES ") :])
        data["interpreter start"] = data["t0"] - began
        data["wall"] = result.seconds
        data["interpreter exit"] = began + result.seconds - data["exit"]  # after registry.close()
        data["exit steps"] = exit_steps(result.output, data["exit"], began + result.seconds)
        (out / f"{size}-{name}-phases.json").write_text(json.dumps(data, indent=2))
        phases = ", ".join(f"{k} {v:.2f}" for k, v in data["phases"].items())
        calls = ", ".join(f"{k} {v[1]:.2f} ({v[0]}x)" for k, v in sorted(data["calls"].items()))
        report.append(
            f"- {size} {name}: wall {result.seconds:.2f} s; interpreter start "
            f"{data['interpreter start']:.2f}; {phases}; interpreter exit {data['interpreter exit']:.2f} "
            f"({data['exit steps']}); inside gc.run: {calls}"
        )
    pyspy = shutil.which("py-spy", path=f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if pyspy:
        for name, percent, flags in (("gc", 10, ()), ("gc-quiet", 10, ("--quiet",))):
            restore(wharf, percent)
            target = out / f"{size}-{name}.txt"
            group = Group(name, percent, False, False, ())
            command = bench.wharf_command(wharf, group, flags)
            timed(
                [pyspy, "record", "--rate", "250", "--format", "raw", "-o", str(target), "--", *command], env
            )
            report.append(f"- py-spy: {target} (bench/profile_summary.py {target})")
    imports = subprocess.run(
        [python, "-X", "importtime", "-c", "import wharf.cli, wharf.cli_gc"],
        capture_output=True,
        text=True,
        env=env,
    ).stderr
    (out / "importtime.txt").write_text(imports)
    (out / f"{size}-summary.md").write_text("\n".join(report) + "\n")
    for line in report:
        log(line)


# -- main --------------------------------------------------------------------------------------


def temp_root(requested: str | None, needed: int) -> str | None:
    """/dev/shm when it has room (GC is metadata work: keep the disk out of it), else the default."""
    if requested:
        return requested
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > needed:
        return str(shm)
    return None


def table(results: list[dict[str, Any]], version: str) -> str:
    rows = [
        f"| size | scenario | Distribution {version} (s) | Wharf (s) | Wharf/Distribution time "
        "| Distribution check | Wharf check |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        rows.append(
            f"| {r['size']} | {r['scenario']} | {r['distribution_median']:.2f} | {r['wharf_median']:.2f} "
            f"| {r['ratio']:.2f}x | {r['distribution_check']} | {r['wharf_check']} |"
        )
    return "\n".join(rows)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    out = []
    by = {(r["size"], r["scenario"]): r for r in results}
    for key in ("GC, 10% deleted", "GC --delete-untagged, 10% deleted"):
        r = by.get(("large", key))
        if r:
            goal = "<=" if r["ratio"] <= 0.2 else ">"
            out.append(f"large {key}: {r['ratio']:.2f}x {goal} 0.2x")
    for flags in ("", " (Wharf --quiet)"):
        ten, one = by.get(("large", "GC, 10% deleted" + flags)), by.get(("large", "GC, 1% deleted" + flags))
        if ten and one:
            out.append(
                f"large, 1% vs 10% deleted{flags or ''}: Wharf {one['wharf_median']:.2f} s vs "
                f"{ten['wharf_median']:.2f} s, Distribution {one['distribution_median']:.2f} s vs "
                f"{ten['distribution_median']:.2f} s"
            )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size",
        action="append",
        choices=sorted(SIZES),
        help="small (50 x 40) and/or large (200 x 50), default both; tiny (4 x 10) is a smoke test",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (connections) for the setup")
    parser.add_argument(
        "--untagged-pct", type=int, default=10, help="percent of images pushed by digest only"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wharf-workers", type=int, default=2, help="Wharf's http.workers for the setup")
    parser.add_argument(
        "--distribution-bin", default=shutil.which("docker-registry") or "/usr/bin/docker-registry"
    )
    parser.add_argument("--tmpdir", help="where to make the temporary directory (default /dev/shm if room)")
    parser.add_argument("--json", help="also write every run's number to this file")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="empty the page cache before every timed run (root; use with --tmpdir on a disk)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="after the timings: per-phase timings and py-spy profiles of Wharf's GC",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the working directory (servers' data and snapshots) and print where it is",
    )
    args = parser.parse_args(argv)
    args.size = [s for s in SIZES if s in (args.size or ("small", "large"))]
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    COLD["on"] = args.cold
    if not Path(args.distribution_bin).exists():
        raise SystemExit(f"{args.distribution_bin} not found: apt-get install -y docker-registry")
    signal.signal(signal.SIGTERM, _interrupt)
    # Per registry and state: ~60k files of a few KiB (a page each on tmpfs); 3 copies each.
    root = temp_root(args.tmpdir, 4 << 30)
    workdir = Path(tempfile.mkdtemp(prefix="wharf-gc-bench-", dir=root))
    log(f"working in {workdir}")
    revision = wharf_revision()
    began = time.monotonic()
    results: list[dict[str, Any]] = []
    setup: dict[str, Any] = {}
    bench = Bench(args, workdir)
    try:
        for size in args.size:
            run_size(bench, size, results, setup)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    version = distribution_version(args.distribution_bin)
    print(table(results, version))
    print()
    notes = []
    for size, info in setup.items():
        notes.append(
            f"{size}: {info['blobs']} layer+config blobs and {info['manifests']} manifests; setup push "
            f"{info['push_Distribution']:.0f} s into Distribution, {info['push_Wharf']:.0f} s into Wharf"
        )
    print(
        f"Wharf ({revision}), SQLite + filesystem, `wharf garbage-collect --grace 0s`; Distribution "
        f"{args.distribution_bin} `garbage-collect`, filesystem driver. Both servers stopped during GC; "
        f"data in {'/dev/shm' if str(workdir).startswith('/dev/shm') else workdir.parent}. "
        f"Median of {args.runs} run(s), each from a restored snapshot"
        f"{', page cache emptied before each' if args.cold else ' (page cache warm)'}; "
        "output piped and read. "
        f"Ratio = Wharf time / Distribution time: lower is better. {os.cpu_count()} CPUs. "
        f"Took {time.monotonic() - began:.0f} s."
    )
    for note in notes:
        print(f"- {note}")
    for line in verdicts(results):
        print(f"- {line}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"revision": revision, "setup": setup, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
