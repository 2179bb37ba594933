"""Online GC under load: clients push images built from a small pool of layers (so they keep
re-using the digests GC is collecting) and delete half of them, while `wharf garbage-collect
--grace 0s` runs in a loop. Afterwards every tagged image pulls, every digest verified, and
no blob row is left without its bytes. On both stacks, and on two replicas of PostgreSQL + S3
each with its own collector loop (only one collection runs at a time across them)."""

from __future__ import annotations

import collections
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

LOAD_SECONDS = 10
CLIENTS = 4
POOL = [os.urandom(random.randint(512, 4096)) for _ in range(8)]


def push_like_a_client(
    client: httpx.Client, repo: str, image: Image, tag: str, uploaded: collections.Counter[str]
) -> None:
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


def load(servers: list[WharfServer], uploaded: collections.Counter[str]) -> dict[str, tuple[str, Image]]:
    """Run the clients; the images left tagged, by tag: (repository, image)."""
    kept: dict[str, tuple[str, Image]] = {}
    failures: list[BaseException] = []
    deadline = time.monotonic() + LOAD_SECONDS
    lock = threading.Lock()

    def client_loop(number: int) -> None:
        rng = random.Random(number)
        clients = [server.client() for server in servers]
        try:
            count = 0
            while time.monotonic() < deadline:
                client = clients[count % len(clients)]
                repo = f"stress/r{rng.randrange(3)}"
                image = Image(
                    config=os.urandom(64) if rng.random() < 0.5 else POOL[rng.randrange(len(POOL))],
                    layers=rng.sample(POOL, 2),
                )
                tag = f"c{number}-{count}"
                push_like_a_client(client, repo, image, tag, uploaded)
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


def collect_in_a_loop(server: WharfServer, stop: threading.Event, results: list[int]) -> None:
    while not stop.is_set():
        results.append(
            run_gc(server, "--grace", "0s", "--quiet", "--batch-size", "4", check=False).returncode
        )


def run_stress(servers: list[WharfServer]) -> None:
    stop = threading.Event()
    results: list[list[int]] = [[] for _ in servers]
    collectors = [
        threading.Thread(target=collect_in_a_loop, args=(server, stop, codes))
        for server, codes in zip(servers, results, strict=True)
    ]
    for collector in collectors:
        collector.start()
    uploaded: collections.Counter[str] = collections.Counter()
    try:
        kept = load(servers, uploaded)
    finally:
        stop.set()
        for collector in collectors:
            collector.join()
    codes = [code for codes in results for code in codes]
    assert codes.count(0) >= 2, codes
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
