"""Many clients writing at once never see a 5xx: the way a registry is filled, with images
that share base layers (each new repository mounts them from the first), beside clients
pushing those layers again and deleting images. Every image whose push was acknowledged
then pulls with its digests verified."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa

from wharf.meta import engines
from wharf.meta.events import Event
from wharf.meta.sql import SQLMetadataStore

from .oci import Image, canonical, sha256
from .server import WharfServer

MOUNTERS = 8  # clients filling new repositories by mounting the base layers
PUSHERS = 2  # clients pushing the base layers again and deleting images
ROUNDS = 6  # new repositories per mounting client
BASE = "base/first"


@dataclass
class Pushed:
    repository: str
    image: Image


class Clients:
    """What the clients saw: every 5xx, and every image acknowledged and not deleted since."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.acknowledged: dict[tuple[str, str], Pushed] = {}

    def check(self, response: httpx.Response, *expected: int) -> bool:
        if response.status_code >= 500 or response.status_code not in expected:
            with self.lock:
                request = response.request
                self.failures.append(
                    f"{request.method} {request.url.path}?{request.url.query.decode()}"
                    f" -> {response.status_code} {response.text[:300]}"
                )
            return False
        return True

    def push_blob(self, client: httpx.Client, repository: str, data: bytes) -> bool:
        params = {"digest": sha256(data)}
        response = client.post(f"/v2/{repository}/blobs/uploads/", params=params, content=data)
        return self.check(response, 201)

    def put_manifest(self, client: httpx.Client, repository: str, image: Image, tag: str) -> None:
        response = client.put(
            f"/v2/{repository}/manifests/{tag}",
            content=image.manifest,
            headers={"Content-Type": image.media_type},
        )
        if self.check(response, 201):
            with self.lock:
                self.acknowledged[(repository, image.digest)] = Pushed(repository, image)

    def delete_manifest(self, client: httpx.Client, pushed: Pushed) -> None:
        with self.lock:  # forgotten first: once the DELETE is sent, the image may be gone
            self.acknowledged.pop((pushed.repository, pushed.image.digest), None)
        response = client.delete(f"/v2/{pushed.repository}/manifests/{pushed.image.digest}")
        self.check(response, 202)


def _image(base_layers: list[bytes]) -> Image:
    # The shared base layers first, then a layer of the image's own, as a build would.
    config = canonical({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()})
    return Image(config, [*base_layers, os.urandom(512)])


def _mounter(server: WharfServer, clients: Clients, number: int, base_layers: list[bytes]) -> None:
    previous: Pushed | None = None
    with server.client() as client:
        for round_ in range(ROUNDS):
            repository = f"fill/c{number}-{round_}"
            image = _image(base_layers)
            for layer in base_layers:
                response = client.post(
                    f"/v2/{repository}/blobs/uploads/", params={"mount": sha256(layer), "from": BASE}
                )
                clients.check(response, 201)
            if clients.push_blob(client, repository, image.config) and clients.push_blob(
                client, repository, image.layers[-1]
            ):
                clients.put_manifest(client, repository, image, "v1")
            if round_ % 3 == 2 and previous is not None:
                clients.delete_manifest(client, previous)
            previous = Pushed(repository, image)


def _pusher(server: WharfServer, clients: Clients, number: int, base_layers: list[bytes]) -> None:
    previous: Pushed | None = None
    with server.client() as client:
        for round_ in range(ROUNDS):
            repository = f"{BASE}-p{number}"
            image = _image(base_layers)
            if all(clients.push_blob(client, repository, blob) for blob in image.blobs):
                clients.put_manifest(client, repository, image, f"r{round_}")
            if previous is not None:
                clients.delete_manifest(client, previous)
            previous = Pushed(repository, image)


def _verify_pull(client: httpx.Client, pushed: Pushed) -> list[str]:
    problems = []
    manifest = client.get(
        f"/v2/{pushed.repository}/manifests/{pushed.image.digest}",
        headers={"Accept": pushed.image.media_type},
    )
    if manifest.status_code != 200 or sha256(manifest.content) != pushed.image.digest:
        problems.append(f"{pushed.repository}@{pushed.image.digest}: manifest {manifest.status_code}")
    for blob in pushed.image.blobs:
        digest = sha256(blob)
        got = client.get(f"/v2/{pushed.repository}/blobs/{digest}")
        if got.status_code != 200 or "sha256:" + hashlib.sha256(got.content).hexdigest() != digest:
            problems.append(f"{pushed.repository}: blob {digest} {got.status_code}")
    return problems


def test_filling_a_registry_with_shared_base_layers_never_answers_5xx(own_server: WharfServer) -> None:
    base_layers = [os.urandom(2048) for _ in range(4)]
    clients = Clients()
    with own_server.client() as client:
        base = Image(canonical({"architecture": "amd64", "os": "linux", "base": True}), base_layers)
        for blob in base.blobs:
            assert clients.push_blob(client, BASE, blob), clients.failures
        clients.put_manifest(client, BASE, base, "latest")
        assert not clients.failures, clients.failures

    threads = [
        threading.Thread(target=_mounter, args=(own_server, clients, n, base_layers)) for n in range(MOUNTERS)
    ] + [threading.Thread(target=_pusher, args=(own_server, clients, n, base_layers)) for n in range(PUSHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "clients still running after 600 s"

    assert not clients.failures, "\n".join(clients.failures[:20])
    assert len(clients.acknowledged) > MOUNTERS * ROUNDS // 2
    with own_server.client() as client:
        problems = [p for pushed in clients.acknowledged.values() for p in _verify_pull(client, pushed)]
    assert not problems, "\n".join(problems[:20])


async def test_many_mounts_of_the_same_blobs_at_once_all_land_at_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store level of the test above: 8 clients mounting the same 4 blobs into new
    repositories. Each mount locks the blob row once; none deadlocks, so none is retried."""
    retried: list[str | None] = []
    sqlstate = engines._sqlstate

    def spy(error: sa.exc.DBAPIError) -> str | None:
        retried.append(sqlstate(error))
        return sqlstate(error)

    monkeypatch.setattr(engines, "_sqlstate", spy)
    store = SQLMetadataStore(database_url)
    try:
        layers = [sha256(os.urandom(16)) for _ in range(4)]
        for layer in layers:
            await store.blobs.link(BASE, layer, 10)

        async def client(number: int) -> list[int | None]:
            event = Event("tester", "blob.mount")
            return [
                await store.blobs.mount(f"fill/c{number}-{round_}", BASE, layer, event)
                for round_ in range(3)
                for layer in layers
            ]

        sizes = await asyncio.gather(*(client(n) for n in range(MOUNTERS)))
        assert all(size == 10 for sizes_ in sizes for size in sizes_)
        assert retried == []
        # A mount from a repository that cannot read the blob creates nothing.
        assert await store.blobs.mount("fill/none", "fill/nowhere", layers[0], Event("t", "m")) is None
        assert "fill/none" not in await store.manifests.list_repositories(None, None)
    finally:
        await store.close()


async def test_postgresql_writers_that_deadlock_are_run_again(postgres_server):
    """Two transactions that lock rows in opposite orders: PostgreSQL kills one, the store
    runs it again, and both land."""
    from wharf.meta import migrate

    from .postgres import create_database, drop_database

    url = create_database(postgres_server)
    try:
        migrate.upgrade(url)
        store = SQLMetadataStore(url)
        for name in ("first", "second"):
            await store.blobs.link(name, sha256(name.encode()), 1)
        runs: list[str] = []

        def crossing(a: str, b: str):
            def work(conn: sa.Connection) -> None:
                runs.append(a)
                update = sa.text("UPDATE repositories SET created_at = now() WHERE name = :name")
                conn.execute(update, {"name": a})
                conn.execute(sa.text("SELECT pg_sleep(0.3)"))
                conn.execute(update, {"name": b})

            return work

        await asyncio.gather(
            store._db.write(crossing("first", "second")), store._db.write(crossing("second", "first"))
        )
        assert len(runs) == 3  # one of the two ran twice
        await store.close()
    finally:
        drop_database(postgres_server, url)


async def test_a_deadlocked_write_inside_a_section_runs_again_on_its_connection(postgres_server: str) -> None:
    """Writes inside a digest section run on the section's connection: a deadlock there
    rolls back that transaction alone (the section's locks stay) and the write runs again."""
    from wharf.meta import migrate

    from .postgres import create_database, drop_database

    url = create_database(postgres_server)
    store = SQLMetadataStore(url)
    try:
        migrate.upgrade(url)
        for name in ("first", "second"):
            await store.blobs.link(name, sha256(name.encode()), 1)
        runs: list[str] = []

        def crossing(a: str, b: str) -> Callable[[sa.Connection], None]:
            def work(conn: sa.Connection) -> None:
                runs.append(a)
                update = sa.text("UPDATE repositories SET created_at = now() WHERE name = :name")
                conn.execute(update, {"name": a})
                conn.execute(sa.text("SELECT pg_sleep(0.3)"))
                conn.execute(update, {"name": b})

            return work

        async def in_section(a: str, b: str) -> None:
            async def body() -> None:
                await store._db.write(crossing(a, b))
                # Still held: another connection cannot take the section's lock.
                key = engines._advisory_key(sha256(a.encode()))

                def probe(conn: sa.Connection) -> bool:
                    return bool(conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))

                assert await asyncio.create_task(store._db.read(probe)) is False

            await store.digest_section([sha256(a.encode())], body)

        await asyncio.gather(in_section("first", "second"), in_section("second", "first"))
        assert len(runs) == 3  # one of the two ran twice
    finally:
        await store.close()
        drop_database(postgres_server, url)
