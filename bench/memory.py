#!/usr/bin/env python3
"""Peak memory of `wharf serve` under many concurrent monolithic pushes. See bench/README.md.

    .venv/bin/python bench/memory.py --storage filesystem|s3 [--pushes 200] [--size-mib 64]

Starts one `wharf serve` (and, with `--storage s3`, one SeaweedFS `weed mini`) on free
loopback ports in a temporary directory, pushes ``--pushes`` distinct blobs of ``--size-mib``
MiB at once (each on its own connection: `POST /v2/<repo>/blobs/uploads/`, then `PUT
<location>&digest=` with the whole body, as docker does), and polls the resident memory of
the server's whole process tree (the `wharf serve` process and every worker it started) from
/proc. It prints the peak of that sum, each process's own high-water mark (VmHWM), and what
stays resident once the pushes are over.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import HTTP_TIMEOUT, MiB, WharfServer, location_path, log, with_query

SUFFIX = 8  # bytes after the shared data that make each blob distinct
TARGET = 1 << 30  # the bound on the server's peak resident memory


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of one process, in bytes (empty once it is gone)."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return values


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name (field 2) may hold spaces: the parent comes after its ')'.
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


@dataclass
class Sampler:
    """Polls the server tree's summed VmRSS every ``interval`` seconds on a thread."""

    root: int
    interval: float
    abort_above: int  # the tree is killed past this many bytes (the machine is shared)
    peak: int = 0
    aborted: bool = False
    last: int = 0
    hwm: dict[int, int] = field(default_factory=dict)
    processes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> int:
        total = 0
        pids = process_tree(self.root)
        self.processes = max(self.processes, len(pids))
        for pid in pids:
            status = _status(pid)
            total += status.get("VmRSS", 0)
            if "VmHWM" in status:
                self.hwm[pid] = max(self.hwm.get(pid, 0), status["VmHWM"])
        self.last = total
        self.peak = max(self.peak, total)
        if total > self.abort_above and not self.aborted:
            self.aborted = True
            log(f"server tree at {total / MiB:.0f} MiB: over --abort-rss-mib, killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.root, signal.SIGKILL)
        return total

    def start(self) -> Sampler:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


class Pusher:
    """One connection pushing one blob: the shared data file, then its own suffix."""

    def __init__(self, port: int, data: Path, size: int, index: int, base: Any) -> None:
        self.port, self.data, self.size = port, data, size
        self.suffix = index.to_bytes(SUFFIX, "big")
        hasher = base.copy()
        hasher.update(self.suffix)
        self.digest = f"sha256:{hasher.hexdigest()}"
        self.error: str | None = None
        self.seconds = 0.0

    def push(self, repo: str, start: threading.Barrier) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
            response = conn.getresponse()
            response.read()
            if response.status != 202:
                raise RuntimeError(f"POST: {response.status}")
            target = with_query(location_path(response), digest=self.digest)
            start.wait()
            began = time.monotonic()
            conn.putrequest("PUT", target, skip_accept_encoding=True)
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(self.size))
            conn.endheaders()
            assert conn.sock is not None
            with self.data.open("rb") as handle:
                conn.sock.sendfile(handle, 0, self.size - SUFFIX)
            conn.sock.sendall(self.suffix)
            response = conn.getresponse()
            body = response.read()
            self.seconds = time.monotonic() - began
            if response.status != 201:
                raise RuntimeError(f"PUT: {response.status} {body[:300]!r}")
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
        finally:
            conn.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage", choices=["filesystem", "s3"], default="filesystem")
    parser.add_argument("--pushes", type=int, default=200, help="concurrent pushes (default 200)")
    parser.add_argument("--size-mib", type=int, default=64, help="MiB per blob (default 64)")
    parser.add_argument("--wharf-server", choices=["granian", "uvicorn"], default="granian")
    parser.add_argument("--wharf-workers", type=int, default=1)
    parser.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between samples (default 0.05)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before 'after' (default 5)")
    parser.add_argument("--tmpdir", default=None, help="where the servers' data goes (default: $TMPDIR)")
    parser.add_argument(
        "--abort-rss-mib",
        type=int,
        default=6144,
        help="kill the server once its tree holds more than this (default 6144); the peak seen is reported",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    return parser.parse_args(argv)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    size = args.size_mib * MiB
    workdir = Path(tempfile.mkdtemp(prefix="wharf-memory-", dir=args.tmpdir))
    shm = Path("/dev/shm")
    datadir = Path(tempfile.mkdtemp(prefix="wharf-memory-data-", dir=shm if shm.is_dir() else None))
    store: Any = None
    wharf: WharfServer | None = None
    try:
        data = datadir / "blob"
        with data.open("wb") as handle:
            for _ in range(0, size - SUFFIX, 64 * MiB):
                handle.write(os.urandom(min(64 * MiB, size - SUFFIX - handle.tell())))
        base = hashlib.sha256(data.read_bytes())
        s3 = None
        if args.storage == "s3":
            from wharf.testing import seaweed

            store = seaweed.SeaweedS3(workdir / "seaweedfs")
            log(f"starting SeaweedFS (weed mini) S3 on {store.endpoint}")
            store.start()
            s3 = store.storage_config("/wharf")  # blob GETs are not redirected (unused here)
        wharf = WharfServer(workdir / "wharf", args.wharf_server, args.wharf_workers, args.fsync, s3)
        log(f"starting wharf serve on 127.0.0.1:{wharf.port}")
        wharf.start()
        assert wharf.process is not None
        pushers = [Pusher(wharf.port, data, size, i, base) for i in range(args.pushes + 2)]
        # Two pushes alone first: every worker has started and loaded what it uses.
        for warm in pushers[args.pushes :]:
            warm.push("bench/memory-warm", threading.Barrier(1))
            if warm.error:
                raise RuntimeError(f"warm-up push failed: {warm.error}\n{wharf.log_tail()}")
        pushers = pushers[: args.pushes]
        sampler = Sampler(wharf.process.pid, args.interval, args.abort_rss_mib * MiB)
        time.sleep(1)
        idle = sampler.sample()
        sampler.peak = 0
        sampler.start()
        start = threading.Barrier(len(pushers) + 1)
        threads = [threading.Thread(target=p.push, args=("bench/memory", start)) for p in pushers]
        for thread in threads:
            thread.start()
        log(f"{len(pushers)} pushes of {args.size_mib} MiB at once ({args.storage})")
        start.wait()
        began = time.monotonic()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - began
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            time.sleep(args.interval)
        sampler.stop()
        after = sampler.last
        if not sampler.aborted:
            wharf.check_alive()
        failed = [p.error for p in pushers if p.error]
        results = {
            "storage": args.storage,
            "server": args.wharf_server,
            "workers": args.wharf_workers,
            "pushes": args.pushes,
            "size_mib": args.size_mib,
            "failed": len(failed),
            "aborted": sampler.aborted,
            "seconds": round(elapsed, 2),
            "mib_per_s": round(args.pushes * args.size_mib / elapsed, 1),
            "processes": sampler.processes,
            "idle_rss_mib": round(idle / MiB, 1),
            "peak_rss_mib": round(sampler.peak / MiB, 1),
            "sum_hwm_mib": round(sum(sampler.hwm.values()) / MiB, 1),
            "after_rss_mib": round(after / MiB, 1),
        }
        print(
            f"| storage | pushes | MiB each | failed | s | MiB/s | idle RSS | peak RSS (sum) "
            f"| sum of VmHWM | RSS {args.settle:g} s after |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
            f"| {args.storage} | {args.pushes} | {args.size_mib} | {len(failed)} | {results['seconds']} "
            f"| {results['mib_per_s']} | {results['idle_rss_mib']} MiB | {results['peak_rss_mib']} MiB "
            f"| {results['sum_hwm_mib']} MiB | {results['after_rss_mib']} MiB |"
        )
        verdict = "under" if sampler.peak < TARGET else "OVER"
        if sampler.aborted:
            print(f"\naborted: the server tree passed {args.abort_rss_mib} MiB and was killed")
        print(f"\npeak {verdict} 1 GiB; server tree: {sampler.processes} processes ({args.wharf_server})")
        for error in sorted(set(failed))[:5]:
            print(f"failed push: {error}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 1 if failed else 0
    finally:
        if wharf is not None:
            wharf.stop()
        if store is not None:
            store.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(datadir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
