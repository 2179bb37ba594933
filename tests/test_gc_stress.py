"""Online GC under load: clients push images built from a small pool of layers (so they keep
re-using the digests GC is collecting) and delete half of them, while `wharf garbage-collect
--grace 0s` runs in a loop. Afterwards every tagged image pulls, every digest verified, and
no blob row is left without its bytes. On both stacks, and on two replicas of PostgreSQL + S3
each with its own collector loop (only one collection runs at a time across them)."""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from wharf.meta import schema as s

from .conftest import stack_config
from .gc import blob_rows, engine, run_gc, stored_digests
from .oci import OCI_MANIFEST, Image, sha256
from .server import WharfServer
from .test_gc import pulls

pytestmark = pytest.mark.slow

CLIENTS = 4
# The window of load is defined by counts, not by time (a busy machine is slow): the clients
# push until this many collections have finished while they ran and they have pushed at
# least this many images, or fail at the deadline.
COLLECTIONS = 2
PUSHES = 24
DEADLINE_SECONDS = 240
POOL = [os.urandom(random.randint(512, 4096)) for _ in range(8)]


class Window:
    """What has happened since the load began: images pushed, collections ended (exit codes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pushes = 0
        self.codes: list[int] = []
        self.deadline = time.monotonic() + DEADLINE_SECONDS

    def pushed(self) -> None:
        with self.lock:
            self.pushes += 1

    def collected(self, code: int) -> None:
        with self.lock:
            self.codes.append(code)

    def enough(self) -> bool:
        """True once the load has done its work; an AssertionError at the deadline."""
        with self.lock:
            if self.codes.count(0) >= COLLECTIONS and self.pushes >= PUSHES:
                return True
            if time.monotonic() > self.deadline:
                raise AssertionError(
                    f"after {DEADLINE_SECONDS} s: {self.pushes} images pushed, collections ended {self.codes}"
                )
            return False


def push_like_a_client(client: httpx.Client, repo: str, image: Image, tag: str) -> None:
    """What docker does: HEAD each blob, upload the missing ones, put the manifest. With a
    grace period of 0 s a blob found by HEAD may be collected before the manifest names it;
    then the put is refused (MANIFEST_BLOB_UNKNOWN) and the client pushes again."""
    for _attempt in range(20):
        for blob in image.blobs:
            if client.head(f"/v2/{repo}/blobs/{sha256(blob)}").status_code != 200:
                response = client.post(
                    f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(blob)}, content=blob
                )
                assert response.status_code == 201, response.text
        response = client.put(
            f"/v2/{repo}/manifests/{tag}", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        if response.status_code == 201:
            return
        assert response.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN", response.text
    raise AssertionError(f"{tag} could not be pushed in 20 attempts")


def load(servers: list[WharfServer], window: Window) -> dict[str, tuple[str, Image]]:
    """Run the clients until the window has seen enough; the images left tagged, by tag:
    (repository, image)."""
    kept: dict[str, tuple[str, Image]] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def client_loop(number: int) -> None:
        rng = random.Random(number)
        clients = [server.client() for server in servers]
        try:
            count = 0
            while not failures and not window.enough():
                client = clients[count % len(clients)]
                repo = f"stress/r{rng.randrange(3)}"
                image = Image(
                    config=os.urandom(64) if rng.random() < 0.5 else POOL[rng.randrange(len(POOL))],
                    layers=rng.sample(POOL, 2),
                )
                tag = f"c{number}-{count}"
                push_like_a_client(client, repo, image, tag)
                window.pushed()
                if rng.random() < 0.5:
                    other = clients[(count + 1) % len(clients)]
                    assert other.delete(f"/v2/{repo}/manifests/{image.digest}").status_code in (202, 404)
                    with lock:
                        for name, (where, seen) in list(kept.items()):
                            if where == repo and seen.digest == image.digest:
                                del kept[name]  # the delete took every tag of that image
                else:
                    with lock:
                        kept[tag] = (repo, image)
                count += 1
        except BaseException as error:  # reported by the main thread
            failures.append(error)
        finally:
            for client in clients:
                client.close()

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return kept


def collect_in_a_loop(server: WharfServer, stop: threading.Event, window: Window) -> None:
    while not stop.is_set():
        window.collected(
            run_gc(server, "--grace", "0s", "--quiet", "--batch-size", "4", check=False).returncode
        )


def run_stress(servers: list[WharfServer]) -> None:
    stop = threading.Event()
    window = Window()
    collectors = [
        threading.Thread(target=collect_in_a_loop, args=(server, stop, window)) for server in servers
    ]
    for collector in collectors:
        collector.start()
    try:
        kept = load(servers, window)
    finally:
        stop.set()
        for collector in collectors:
            collector.join()
    codes = window.codes
    assert codes.count(0) >= COLLECTIONS, codes
    assert set(codes) <= {0, 2}, codes  # 2: another collection was running (several replicas)

    run_gc(servers[0], "--grace", "0s")
    assert kept
    with servers[-1].client() as client:
        for tag, (repo, _image) in kept.items():
            assert pulls(client, repo, tag), f"{repo}:{tag} does not pull"
    rows, stored = blob_rows(servers[0]), stored_digests(servers[0])
    assert rows <= stored, f"rows without bytes: {sorted(rows - stored)}"
    live = {sha256(blob) for _repo, image in kept.values() for blob in image.blobs}
    assert live <= rows
    # Collections never overlapped: each started after the one before had ended.
    db = engine(servers[0])
    with db.connect() as conn:
        runs = conn.execute(
            sa.select(s.gc_runs.c.started_at, s.gc_runs.c.ended_at).order_by(s.gc_runs.c.id)
        ).all()
    db.dispose()
    for before, after in itertools.pairwise(runs):
        assert before.ended_at is not None and before.ended_at <= after.started_at


def test_online_gc_under_load_loses_nothing(own_server):
    run_stress([own_server])


def test_online_gc_under_load_on_two_replicas(request: pytest.FixtureRequest, tmp_path: Path):
    with stack_config(request, "postgresql+s3") as config:
        servers = []
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            servers.append(WharfServer(tmp_path / name, config).start())
        try:
            run_stress(servers)
        finally:
            for server in servers:
                server.stop()
