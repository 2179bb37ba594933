from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from .server import WharfServer

if TYPE_CHECKING:
    from wharf.meta.sql import SQLMetadataStore

# Debian's docker.io: its client in /usr/bin (another docker may come first on PATH).
DEBIAN_DOCKER = Path("/usr/bin/docker")

STACKS = ["sqlite+filesystem", "postgresql+s3"]


@contextlib.contextmanager
def stack_config(
    request: pytest.FixtureRequest, stack: str, redirect: bool = False
) -> Iterator[dict[str, Any]]:
    """Configuration for a registry of its own on one stack: nothing for the embedded
    defaults; a fresh database and bucket prefix for PostgreSQL + S3."""
    if stack != "postgresql+s3":
        yield {}
        return
    from wharf.meta import migrate

    from .postgres import create_database, drop_database

    postgres = request.getfixturevalue("postgres_server")
    url = create_database(postgres)
    migrate.upgrade(url)
    s3 = request.getfixturevalue("s3_server")
    storage: dict[str, Any] = {"s3": s3.storage_config(f"wharf/{uuid.uuid4().hex}")}
    if not redirect:
        storage["redirect"] = {"disable": True}
    try:
        yield {"database": {"url": url}, "storage": storage}
    finally:
        drop_database(postgres, url)


# What pytest itself (and Python) may leave in the working directory.
_TOOL_LEFTOVERS = {".pytest_cache", "__pycache__", ".hypothesis"}


def _working_directory_entries() -> set[str]:
    """The names in the working directory, and in a ./data there (the embedded default's)."""
    names = set(os.listdir())
    if os.path.isdir("data"):
        names |= {f"data/{name}" for name in os.listdir("data")}
    return names - _TOOL_LEFTOVERS


@pytest.fixture(scope="session", autouse=True)
def nothing_is_written_into_the_working_directory() -> Iterator[None]:
    """Tests run their processes in their own directories: once, a registry in the checkout
    took rows from the suite. Anything new in the working directory fails the run."""
    before = _working_directory_entries()
    yield
    new = _working_directory_entries() - before
    assert not new, f"the tests wrote into the working directory {os.getcwd()}: {sorted(new)}"


# The embedded defaults with Wharf's accounts on, every client signed in as a writer.
WRITER_STACK = "sqlite+filesystem+writer"


@pytest.fixture(scope="session", params=[*STACKS, WRITER_STACK])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    """One registry per stack, shared by the tests that only need a registry: every test
    taking it runs on the embedded defaults, on PostgreSQL with S3 (SeaweedFS), and on the
    embedded defaults with auth on, its clients a writer getting tokens from /auth/token.
    Blob GETs are answered by Wharf itself here, so the suite checks Wharf's own headers;
    test_redirect.py covers the redirect to the object store."""
    writer = request.param == WRITER_STACK
    with stack_config(request, request.param.removesuffix("+writer")) as config:
        if writer:
            from .accounts import ACCOUNTS
            from .server import deep_merge

            config = deep_merge(config, ACCOUNTS)
        instance = WharfServer(tmp_path_factory.mktemp("wharf"), config).start()
        if writer:
            sign_in_as_writer(instance)
        yield instance
        instance.stop()


def sign_in_as_writer(server: WharfServer) -> None:
    """An administrator, an organization ``test`` (the namespace of ``repo``) whose team
    ``writers`` has read-write on it, its member ``writer``; clients sign in as them."""
    from .accounts import add_user
    from .dtr import ROOT, call, expect, login, organization, users
    from .token_auth import TokenAuth

    add_user(server.database_url, *ROOT, admin=True)
    users(server, "writer")
    with server.client() as http:
        organization(http, "test", writers=("writer",))
        access = {"accessLevel": "read-write"}
        expect(call(http, "PUT", "/repositoryNamespaces/test/teamAccess/writers", ROOT, access), 200)
    server.credentials = login("writer")
    server.auth = TokenAuth(*server.credentials)
    server.admin_auth = httpx.BasicAuth(*ROOT)


@pytest.fixture(params=STACKS)
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WharfServer]:
    """A registry of the test's own (an empty one, whose every blob the test knows), on each stack."""
    with stack_config(request, request.param) as config:
        instance = WharfServer(tmp_path, config).start()
        yield instance
        instance.stop()


@pytest.fixture(params=STACKS)
def accounts_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WharfServer]:
    """A registry of the test's own with Wharf's accounts on, on each stack, whose system
    administrator is ``tests.dtr.ROOT``."""
    from .accounts import ACCOUNTS, add_user
    from .dtr import ROOT
    from .server import deep_merge

    with stack_config(request, request.param) as config:
        instance = WharfServer(tmp_path, deep_merge(config, ACCOUNTS)).start()
        add_user(instance.database_url, *ROOT, admin=True)
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
def admin_client(server: WharfServer) -> Iterator[httpx.Client]:
    """A system administrator's client (the same as ``client`` where auth is off)."""
    with server.client(auth=server.admin_auth) as http:
        yield http


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name of the test's own, so tests sharing a server never collide."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"test/{slug}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server for the session: WHARF_TEST_POSTGRES_URL, or a throwaway cluster."""
    from .postgres import PostgresCluster

    given = os.environ.get("WHARF_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    cluster = PostgresCluster()
    try:
        cluster.start()
    except Exception as exc:  # a missing PostgreSQL fails the run; it is never skipped
        cluster.stop()
        raise RuntimeError(f"cannot start a throwaway PostgreSQL: {exc}") from exc
    yield cluster.url
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database of each backend: tests taking it run once per backend."""
    from wharf.meta import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'wharf.db'}"
        migrate.upgrade(url)
        yield url
        return
    from .postgres import create_database, drop_database

    server = request.getfixturevalue("postgres_server")
    url = create_database(server)
    migrate.upgrade(url)
    yield url
    drop_database(server, url)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SQLMetadataStore]:
    """The metadata store on an empty database of each backend."""
    from wharf.meta.sql import SQLMetadataStore

    instance = SQLMetadataStore(database_url)
    yield instance
    await instance.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A SeaweedFS S3 server for the session; a missing one fails the run, never skips it."""
    from wharf.testing.seaweed import SeaweedS3

    instance = SeaweedS3().start()
    yield instance
    instance.stop()


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (as mount's size=, "256k", "2m") mounted at ``directory``: a
    disk that fills up, for real. Tests run as root here."""
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def apt_tool(binary: str, package: str, *options: str) -> str:
    """A Debian tool's path, installed with apt-get (and ``options``) when missing. Never
    skips: a missing tool fails."""
    path = shutil.which(binary)
    if path is None:
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", *options, package]):
            result = subprocess.run(
                command,
                capture_output=True,
                timeout=600,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            if result.returncode != 0:
                pytest.fail(
                    f"{' '.join(command)} failed with {result.returncode} (CI={os.environ.get('CI')}):\n"
                    f"{result.stderr.decode(errors='replace')[-4000:]}",
                    pytrace=False,
                )
        path = shutil.which(binary)
        if path is None:
            pytest.fail(f"apt-get install -y {package} succeeded but {binary} is not on PATH", pytrace=False)
    return path


@pytest.fixture(scope="session")
def skopeo() -> str:
    """Debian's skopeo."""
    return apt_tool("skopeo", "skopeo")


@pytest.fixture(scope="session")
def docker_registry() -> str:
    """Debian's docker-registry: CNCF Distribution 2.8."""
    return apt_tool("docker-registry", "docker-registry")


@pytest.fixture(scope="session")
def docker_env() -> Iterator[dict[str, str]]:
    """A private Docker daemon (its own root, sockets and pid file, no iptables, no bridge),
    and the environment that points Debian's docker client at it."""
    dockerd = apt_tool("dockerd", "docker.io", "--no-install-recommends")
    assert DEBIAN_DOCKER.exists(), "docker.io is installed but /usr/bin/docker is missing"
    # A short path: the daemon's unix sockets live under it (at most 108 bytes).
    directory = Path(tempfile.mkdtemp(prefix="wharf-docker-"))
    sock, pidfile = directory / "docker.sock", directory / "docker.pid"
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{sock}",
        "DOCKER_CONFIG": str(directory / "client"),
        "PATH": f"{DEBIAN_DOCKER.parent}:{os.environ.get('PATH', '')}",
    }
    command = [dockerd, "--data-root", str(directory / "root"), "--exec-root", str(directory / "exec")]
    command += ["-H", f"unix://{sock}", "--pidfile", str(pidfile), "--storage-driver", "vfs"]
    command += ["--iptables=false", "--bridge=none"]
    with (directory / "dockerd.log").open("wb") as log:
        daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([DEBIAN_DOCKER, "info"], env=env, capture_output=True).returncode != 0:
            assert daemon.poll() is None, (directory / "dockerd.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "dockerd did not answer within 60 s"
            time.sleep(0.2)
        yield env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        shutil.rmtree(directory, ignore_errors=True)


# The fault tests (`scripts/test -m faults`): crashes, full disks, failing or stalling
# servers, crafted input, cancellations inside critical sections, lost locks, slow clients.
FAULT_FILES = {
    "test_fault_suite.py",
    "test_fault_answers.py",
    "test_s3_faults.py",
    "test_gc_sections.py",
    "test_gc_lock.py",
    "test_gc_invariants.py",
    "test_concurrent_writes.py",
    "test_slow_clients.py",
    "test_crafted_input.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in FAULT_FILES:
            item.add_marker(pytest.mark.faults)
