"""Running `wharf garbage-collect` against a test registry, and looking behind the API at
what is left: the blob rows in its database and the bytes in its storage."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from wharf.config import load_settings
from wharf.meta import migrate
from wharf.meta import schema as s
from wharf.wiring import build_storage

from .server import WharfServer

ELIGIBLE = re.compile(r"^blob eligible for deletion: (sha256:[0-9a-f]{64})", re.M)
MANIFEST_ELIGIBLE = re.compile(r"^(\S+): manifest eligible for deletion: (sha256:[0-9a-f]{64})", re.M)


def gc_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WHARF_") or k.startswith("WHARF_TEST_")}


def gc_command(server: WharfServer, *args: str) -> list[str]:
    return [sys.executable, "-m", "wharf", "garbage-collect", *args, str(server.config_path)]


def run_gc(server: WharfServer, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        gc_command(server, *args), capture_output=True, text=True, env=gc_env(), timeout=300
    )
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def eligible(output: str) -> set[str]:
    return set(ELIGIBLE.findall(output))


def stored(server: WharfServer, digest: str) -> bool:
    """Whether the blob's bytes are in the registry's storage (asked of the storage itself)."""
    store = build_storage(load_settings(str(server.config_path)))
    return asyncio.run(store.stat(digest)) is not None


def stored_digests(server: WharfServer) -> set[str]:
    store = build_storage(load_settings(str(server.config_path)))

    async def listing() -> set[str]:
        return {digest async for digest in store.list()}

    return asyncio.run(listing())


def store_file(server: WharfServer, data: bytes, digest: str) -> None:
    """Put bytes on storage the way a crash between commit and row would leave them."""
    store = build_storage(load_settings(str(server.config_path)))

    async def body() -> Any:
        yield data

    async def accept(_size: int, publish: Any) -> None:
        await publish()

    asyncio.run(store.store_blob(digest, body(), lambda _chunk: None, accept))


def engine(server: WharfServer) -> sa.Engine:
    return sa.create_engine(migrate.sync_url(server.database_url))


def blob_rows(server: WharfServer) -> set[str]:
    db = engine(server)
    try:
        with db.connect() as conn:
            return set(conn.scalars(sa.select(s.blobs.c.digest)))
    finally:
        db.dispose()


def set_blob_seen(server: WharfServer, digest: str, when: datetime) -> None:
    db = engine(server)
    try:
        with db.begin() as conn:
            conn.execute(s.blobs.update().where(s.blobs.c.digest == digest).values(last_seen_at=when))
    finally:
        db.dispose()


def run_on_a_terminal(command: list[str]) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """Run ``command`` with its stderr on a pseudo-terminal (stdout a pipe): its result, and
    what the terminal was shown (a progress bar draws there with escape codes)."""
    import pty

    controller, terminal = pty.openpty()
    try:
        env = {**gc_env(), "COLUMNS": "100", "TERM": "xterm"}
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=terminal, env=env, timeout=120, text=True
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    return result, shown
