"""The fault suite: `wharf serve` SIGKILLed at random moments of real work, dozens of times
with seeded randomness, restarted each time and checked (by `wharf fsck` too): zero rows without bytes, every
image whose push was acknowledged pulls whole with its digests verified, every
acknowledged delete stayed done. On both stacks. Run it alone with `scripts/test -m faults`;
WHARF_TEST_FAULT_SEED picks the seed (the failure message names the one that failed)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import STACKS, stack_config
from .gc import blob_rows, gc_env, run_gc, stored_digests
from .oci import OCI_INDEX, OCI_MANIFEST, Image, index, sha256
from .server import WharfServer
from .test_fault_answers import cluster

pytestmark = pytest.mark.slow
__all__ = ["cluster"]  # the fixture: a PostgreSQL of the test's own, to restart

ROUNDS = int(os.environ.get("WHARF_TEST_FAULT_ROUNDS", "14"))
SEED = int(os.environ.get("WHARF_TEST_FAULT_SEED", "20261201"))
# A pool of layers the work shares, so mounts, re-pushes and collections meet the same digests.
POOL = [os.urandom(2048) for _ in range(12)]


@dataclass
class Ledger:
    """What the registry acknowledged, and so must still hold (or not) after any crash."""

    images: dict[str, tuple[str, str]] = field(default_factory=dict)  # tag -> (repository, digest)
    deleted: set[tuple[str, str]] = field(default_factory=set)  # (repository, tag) removed
    # Tags whose move or delete got no answer (the server died, or the client timed out on a
    # busy machine): it may or may not have happened, so either outcome is right; None is
    # "gone". Each still pulls whole if it is there.
    in_doubt: dict[str, tuple[str, set[str | None]]] = field(default_factory=dict)
    operations: int = 0
    pushed: int = 0  # images acknowledged


def _kind(rng: random.Random) -> str:
    return rng.choice(["monolithic", "chunked", "mount", "index", "move", "delete", "untag"])


def work(server: WharfServer, rng: random.Random, ledger: Ledger, name: str, stop: threading.Event) -> None:
    """One client doing a random mix of pushes (monolithic, chunked, mounted), index puts, tag
    moves and deletes until the server goes away. Only answers it got count. Each client
    keeps a ledger of its own tags, so no two clients' answers can cross."""
    repository = f"lib/faults-{rng.randrange(3)}"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        number = 0
        while not stop.is_set():
            number += 1
            try:
                step(client, rng, ledger, repository, f"{name}-{number}")
            except httpx.TransportError:
                return  # killed under us: what was not acknowledged promises nothing


@contextmanager
def unanswered(ledger: Ledger, tags: list[str], outcomes: set[str | None]) -> Iterator[None]:
    """A change to these tags whose answer never came leaves each one in doubt."""
    try:
        yield
    except httpx.TransportError:
        for tag in tags:
            repository, digest = ledger.images.pop(tag)
            ledger.in_doubt[tag] = (repository, {digest, *outcomes})
        raise


def step(client: httpx.Client, rng: random.Random, ledger: Ledger, repository: str, tag: str) -> None:
    kind = _kind(rng)
    ledger.operations += 1
    if kind in ("move", "delete", "untag") and ledger.images:
        old_tag = rng.choice(sorted(ledger.images))
        old_repository, digest = ledger.images[old_tag]
        if kind == "move":  # the tag moves to another image: pushed first, then tagged
            image = image_of(rng)
            if not push(client, old_repository, image, "chunked"):
                return
            with unanswered(ledger, [old_tag], {image.digest}):
                moved = put(client, old_repository, old_tag, image)
            if moved:
                ledger.images[old_tag] = (old_repository, image.digest)
            return
        if kind == "untag":
            with unanswered(ledger, [old_tag], {None}):
                removed = client.delete(f"/v2/{old_repository}/manifests/{old_tag}").status_code == 202
            if removed:
                del ledger.images[old_tag]
                ledger.deleted.add((old_repository, old_tag))
            return
        # The image goes with every tag that names it.
        naming = [
            name for name, image_of_tag in ledger.images.items() if image_of_tag == (old_repository, digest)
        ]
        with unanswered(ledger, naming, {None}):
            removed = client.delete(f"/v2/{old_repository}/manifests/{digest}").status_code == 202
        if removed:
            for name in naming:
                del ledger.images[name]
                ledger.deleted.add((old_repository, name))
        return
    image = image_of(rng)
    if kind == "index":
        children = [image_of(rng) for _ in range(2)]
        if all(push(client, repository, child, "monolithic") for child in children):
            for child in children:
                if not put(client, repository, child.digest, child):
                    return
            payload = index(children)
            response = client.put(
                f"/v2/{repository}/manifests/{tag}", content=payload, headers={"Content-Type": OCI_INDEX}
            )
            if response.status_code == 201:
                ledger.images[tag] = (repository, sha256(payload))
                ledger.pushed += 1
        return
    if push(client, repository, image, kind) and put(client, repository, tag, image):
        ledger.images[tag] = (repository, image.digest)
        ledger.pushed += 1


def image_of(rng: random.Random) -> Image:
    image = Image.random(layers=0)
    image.layers = [*rng.sample(POOL, 2), os.urandom(rng.choice([512, 4096, 70_000]))]
    return image


def push(client: httpx.Client, repository: str, image: Image, kind: str) -> bool:
    for blob in image.blobs:
        digest = sha256(blob)
        if kind == "mount" and blob in POOL:
            source = "lib/faults-0" if repository != "lib/faults-0" else "lib/faults-1"
            mounted = client.post(
                f"/v2/{repository}/blobs/uploads/", params={"mount": digest, "from": source}
            )
            if mounted.status_code == 201:
                continue
            if mounted.status_code == 202:  # not there to mount: a session instead
                response = client.put(mounted.headers["location"], params={"digest": digest}, content=blob)
                if response.status_code != 201:
                    return False
                continue
            return False
        if kind == "chunked":
            started = client.post(f"/v2/{repository}/blobs/uploads/")
            if started.status_code != 202:
                return False
            location, half = started.headers["location"], len(blob) // 2
            patched = client.patch(
                location,
                content=blob[:half],
                headers={"Content-Range": f"0-{half - 1}", "Content-Type": "application/octet-stream"},
            )
            if patched.status_code != 202:
                return False
            response = client.put(patched.headers["location"], params={"digest": digest}, content=blob[half:])
        else:
            response = client.post(
                f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=blob
            )
        if response.status_code != 201:
            return False
    return True


def put(client: httpx.Client, repository: str, reference: str, image: Image) -> bool:
    response = client.put(
        f"/v2/{repository}/manifests/{reference}",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    return response.status_code == 201


@pytest.fixture(params=STACKS)
def fault_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WharfServer]:
    """A registry whose collections run as jobs in the server itself (so a kill takes them
    too), quick to notice a dead worker's job."""
    with stack_config(request, request.param) as config:
        config = {**config, "jobs": {"poll": "200ms", "heartbeat": "500ms", "stale": "3s"}}
        instance = WharfServer(tmp_path, config).start()
        yield instance
        instance.stop()


def patient_get(client: httpx.Client, path: str, **kwargs: Any) -> httpx.Response:
    """A GET asked again while the registry answers 5xx (a busy machine's object store may
    time out: an honest 503, not lost data), for up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        response = client.get(path, **kwargs)
        if response.status_code < 500 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def pull_problem(client: httpx.Client, repository: str, reference: str) -> str | None:
    """Why the image does not come back whole with its digests verified, or None."""
    accept = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    response = patient_get(client, f"/v2/{repository}/manifests/{reference}", headers=accept)
    if response.status_code != 200:
        return f"manifest {reference}: {response.status_code} {response.text[:300]}"
    document = response.json()
    if "manifests" in document:
        for child in document["manifests"]:
            problem = pull_problem(client, repository, child["digest"])
            if problem:
                return f"child of {reference}: {problem}"
        return None
    for entry in [document["config"], *document["layers"]]:
        blob = patient_get(client, f"/v2/{repository}/blobs/{entry['digest']}")
        if blob.status_code != 200:
            return f"blob {entry['digest']}: {blob.status_code} {blob.text[:300]}"
        if sha256(blob.content) != entry["digest"]:
            return f"blob {entry['digest']}: {len(blob.content)} bytes of other content"
    return None


def check(server: WharfServer, ledgers: list[Ledger], context: str) -> None:
    # Storage first, rows second: a collection taking over meanwhile only deletes (rows
    # before bytes), so a row seen second whose bytes the first look missed is a real lie.
    stored = stored_digests(server)
    rows = blob_rows(server)
    assert rows <= stored, f"{context}: rows without bytes: {sorted(rows - stored)}"
    checked = subprocess.run(
        [sys.executable, "-m", "wharf", "fsck", "-q", str(server.config_path)],
        capture_output=True,
        text=True,
        env=gc_env(),
        timeout=300,
    )
    assert checked.returncode == 0, f"{context}: wharf fsck found problems:\n{checked.stdout}{checked.stderr}"
    with server.client() as client:
        for ledger in ledgers:
            for tag, (repository, digest) in sorted(ledger.images.items()):
                problem = pull_problem(client, repository, tag)
                assert problem is None, f"{context}: acknowledged {repository}:{tag} does not pull: {problem}"
                got = client.head(
                    f"/v2/{repository}/manifests/{tag}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
                )
                assert got.headers.get("docker-content-digest") == digest, (
                    f"{context}: {repository}:{tag} moved"
                )
            for repository, tag in sorted(ledger.deleted):
                got = client.head(f"/v2/{repository}/manifests/{tag}")
                assert got.status_code == 404, f"{context}: deleted {repository}:{tag} came back"
            for tag, (repository, outcomes) in sorted(ledger.in_doubt.items()):
                got = client.head(
                    f"/v2/{repository}/manifests/{tag}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
                )
                found = None if got.status_code == 404 else got.headers.get("docker-content-digest")
                assert found in outcomes, (
                    f"{context}: {repository}:{tag} (change unanswered) is {found}, not one of {outcomes}"
                )
                if found is not None:
                    problem = pull_problem(client, repository, tag)
                    assert problem is None, (
                        f"{context}: {repository}:{tag} (change unanswered) does not pull: {problem}"
                    )


def collections_finished(server: WharfServer) -> None:
    """Wait for every collection job (some were taken over from a killed server) to end."""
    deadline = time.monotonic() + 180
    with server.client() as client:
        while time.monotonic() < deadline:
            jobs = client.get("/api/v0/jobs", params={"action": "registryGC", "limit": 100}).json()["jobs"]
            if all(job["status"] not in ("waiting", "running") for job in jobs):
                return
            time.sleep(0.2)
    raise AssertionError(f"collections still going after 180 s: {jobs}")


def start_collection(server: WharfServer) -> None:
    with server.client() as client:
        response = client.post(
            "/api/v0/admin/jobs",
            json={"job": "registryGC", "parameters": {"graceSeconds": 0, "batchSize": 1}},
        )
        assert response.status_code == 202, response.text


def test_sigkill_at_random_moments_loses_nothing_acknowledged(fault_server: WharfServer):
    ledgers = [Ledger(), Ledger()]
    for round_number in range(ROUNDS):
        seed = SEED * 1000 + round_number
        rng = random.Random(seed)
        context = f"round {round_number} (WHARF_TEST_FAULT_SEED={SEED}, round seed {seed})"
        stop = threading.Event()
        workers = [
            threading.Thread(
                target=work,
                args=(fault_server, random.Random(seed * 10 + n), ledger, f"c{n}r{round_number}", stop),
            )
            for n, ledger in enumerate(ledgers)
        ]
        for thread in workers:
            thread.start()
        if rng.random() < 0.4:
            start_collection(fault_server)  # a collection runs inside the server when it dies
        # The moment of the crash: random, by design, once the clients are under way and
        # have had a push acknowledged this round (a busy machine may take a while).
        under_way = sum(ledger.pushed for ledger in ledgers) + 1
        deadline = time.monotonic() + 120
        while sum(ledger.pushed for ledger in ledgers) < under_way:
            assert time.monotonic() < deadline, f"{context}: no push acknowledged in 120 s"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 1.0))
        fault_server.stop(signal.SIGKILL)
        stop.set()
        for thread in workers:
            thread.join(timeout=60)
        fault_server.start()
        check(fault_server, ledgers, context)
    operations = sum(ledger.operations for ledger in ledgers)
    assert operations > ROUNDS * 2, f"the work barely ran ({operations} operations): the suite proves little"
    assert sum(ledger.pushed for ledger in ledgers) >= ROUNDS, "few pushes were ever acknowledged"

    # What the crashes left (leaks, half-done collections) is collected, and nothing else.
    collections_finished(fault_server)
    run_gc(fault_server, "--grace", "0s", "--scan-storage")
    check(fault_server, ledgers, "after a final collection")


S3_OPERATIONS = [
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "CopyObject",
    "UploadPartCopy",
    "HeadObject",
    "GetObject",
    "ListObjectsV2",
    "DeleteObjects",
]


@pytest.fixture
def proxied_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[WharfServer, Any]]:
    """PostgreSQL + S3, the S3 requests going through the fault proxy."""
    from wharf.testing.s3proxy import S3FaultProxy
    from wharf.testing.seaweed import ACCESS_KEY, SECRET_KEY

    s3 = request.getfixturevalue("s3_server")
    with (
        stack_config(request, "postgresql+s3") as config,
        S3FaultProxy(s3.endpoint, ACCESS_KEY, SECRET_KEY) as proxy,
    ):
        config["storage"]["s3"]["regionendpoint"] = proxy.endpoint
        instance = WharfServer(tmp_path, config).start()
        try:
            yield instance, proxy
        finally:
            instance.stop()


def pushers(
    server: WharfServer, ledgers: list[Ledger], answers: list[int], stop: threading.Event, repository: str
) -> list[threading.Thread]:
    """A thread for each ledger, pushing as ``work`` does (but going on past a failed
    request) until ``stop``, each status it is answered noted in ``answers``."""

    def pushing(ledger: Ledger, name: str) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            original = client.request

            def noted(*args: Any, **kwargs: Any) -> httpx.Response:
                response = original(*args, **kwargs)
                answers.append(response.status_code)
                return response

            client.request = noted  # type: ignore[method-assign]
            number = 0
            while not stop.is_set():
                number += 1
                step(client, random.Random(f"{name}-{number}"), ledger, repository, f"{name}-{number}")

    name = repository.rsplit("/", 1)[-1]
    return [threading.Thread(target=pushing, args=(ledger, f"{name}{n}")) for n, ledger in enumerate(ledgers)]


def test_s3_failing_and_stalling_never_gets_a_500_nor_a_row_without_bytes(proxied_server):
    """S3 answering 500s (some retried past by the client, some for good) and hanging up on
    requests, chosen at seeded random while two clients push and pull: every answer is the
    registry's own (201, 202, 200) or a clear 503 UNAVAILABLE, never a 500; afterwards no row
    is without its bytes and every acknowledged image pulls whole."""
    server, proxy = proxied_server
    rng = random.Random(SEED)
    ledgers = [Ledger(), Ledger()]
    answers: list[int] = []
    stop = threading.Event()

    workers = pushers(server, ledgers, answers, stop, "lib/s3faults")
    for thread in workers:
        thread.start()
    try:
        for number in range(ROUNDS):
            operation = rng.choice(S3_OPERATIONS)
            kind = rng.choice(["retried", "for good", "hang up"])
            if number == 0:  # one fault every push meets: completing the blob's upload, for good
                operation, kind = "CompleteMultipartUpload", "for good"
            if kind == "retried":
                rule = proxy.answer(500, operation=operation, times=1)
            elif kind == "for good":
                rule = proxy.answer(500, operation=operation)
            else:
                rule = proxy.stall(operation=operation, seconds=0.5, times=3)
            started = len(answers)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                seen = answers[started:]
                if len(seen) >= 6 and (number > 0 or 503 in seen):
                    break
                time.sleep(0.02)
            rule.remove()
    finally:
        proxy.clear()
        stop.set()
        for thread in workers:
            thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in workers)
    assert 500 not in answers, sorted(set(answers))
    assert set(answers) <= {200, 201, 202, 204, 404, 503}, sorted(set(answers))
    assert 503 in answers, "no fault reached a client: the test proves little"
    assert sum(ledger.pushed for ledger in ledgers) > 0
    check(server, ledgers, f"S3 faults (WHARF_TEST_FAULT_SEED={SEED})")


def test_postgresql_restarted_while_pushes_run_answers_503_and_recovers(cluster, s3_server, tmp_path):
    """PostgreSQL stopped (its sessions cut) and started again, twice, while two clients
    push: requests caught by it answer 503 UNAVAILABLE (never a 500), the registry takes
    pushes again on its own, and nothing acknowledged is lost or left without bytes."""
    from wharf.meta import migrate

    from .postgres import create_database

    url = create_database(cluster.url)
    migrate.upgrade(url)
    config = {
        "database": {"url": url},
        "storage": {
            "s3": s3_server.storage_config(f"wharf/{uuid.uuid4().hex}"),
            "redirect": {"disable": True},
        },
        "jobs": {"enabled": False},
    }
    server = WharfServer(tmp_path, config).start()
    ledgers = [Ledger(), Ledger()]
    answers: list[int] = []
    stop = threading.Event()

    workers = pushers(server, ledgers, answers, stop, "lib/pgrestart")
    try:
        for thread in workers:
            thread.start()
        for _ in range(2):
            before = len(answers)
            deadline = time.monotonic() + 60
            while len(answers) < before + 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            cluster.pause()
            cluster.resume()
        acknowledged = sum(ledger.pushed for ledger in ledgers)
        deadline = time.monotonic() + 120
        while sum(ledger.pushed for ledger in ledgers) < acknowledged + 2:
            assert time.monotonic() < deadline, "no push acknowledged after PostgreSQL came back"
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=300)
    try:
        assert 500 not in answers, sorted(set(answers))
        assert set(answers) <= {200, 201, 202, 204, 404, 503}, sorted(set(answers))
        assert 503 in answers, "no request was caught by the restart: the test proves little"
        check(server, ledgers, "PostgreSQL restarted")
    finally:
        server.stop()
