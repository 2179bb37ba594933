from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .server import WharfServer


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    """One registry on the embedded defaults, shared by the tests that only need a registry."""
    instance = WharfServer(tmp_path_factory.mktemp("wharf")).start()
    yield instance
    instance.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., WharfServer]]:
    """Registries of a test's own, with configuration of its own."""
    started: list[WharfServer] = []

    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> WharfServer:
        directory = tmp_path / f"server{len(started)}"
        directory.mkdir()
        instance = WharfServer(directory, config, **kwargs).start()
        started.append(instance)
        return instance

    yield make
    for instance in started:
        instance.stop()


@pytest.fixture
def client(server: WharfServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name of the test's own, so tests sharing a server never collide."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"test/{slug}-{uuid.uuid4().hex[:8]}"
