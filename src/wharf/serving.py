"""Starting the HTTP server (granian or uvicorn) with the limits that keep slow and idle
clients from holding every connection: a header timeout, a bound on connections, and
enough file descriptors for that bound.

The request-body timeout and the bound on requests in flight are the app's own (guard.py):
neither server times out a body that stops arriving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import HTTPConfig, Settings, load_settings

log = logging.getLogger(__name__)

# Descriptors a process needs besides its connections (database, logs, blob files).
FD_RESERVE = 256


def raise_fd_limit(settings: HTTPConfig) -> int:
    """Raise the soft limit on open files to the hard limit, as Go does for Distribution:
    each held upload costs a socket and a file, and the default soft limit (often 1024)
    would otherwise run out long before maxconnections. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-files limit from %s to %s: %s", soft, hard, error)
    needed = settings.workers * (settings.maxconnections + settings.maxrequests) + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-files limit %s is below what http.maxconnections and http.maxrequests need (%s): "
            "raise it (ulimit -n) or lower them",
            soft,
            needed,
        )
    return int(soft)


def run_granian(settings: Settings, log_config: dict[str, Any] | None) -> None:
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings

    http = settings.http
    Granian(
        "wharf.app:app_from_environment",
        factory=True,
        address=http.host,
        port=http.port,
        interface=Interfaces.ASGI,
        workers=http.workers,
        # backpressure is granian's bound on connections per worker: beyond it, new ones
        # wait in the listen backlog until one closes (the timeouts make that soon).
        backpressure=http.maxconnections,
        backlog=max(1024, min(http.maxconnections * http.workers, 65535)),
        # hyper's header timeout also closes keep-alive connections idle that long.
        http1_settings=HTTP1Settings(header_read_timeout=max(1, round(http.timeouts.header_seconds * 1000))),
        log_access=False,
        log_level="warning",  # type: ignore[arg-type]
        log_dictconfig=log_config,
    ).serve()


def run_uvicorn(settings: Settings, log_config: dict[str, Any] | None) -> None:
    import uvicorn

    http = settings.http
    uvicorn.run(
        "wharf.app:app_from_environment",
        factory=True,
        host=http.host,
        port=http.port,
        workers=http.workers,
        loop="uvloop",
        http="wharf.serving:HeaderTimeoutProtocol",
        # uvicorn answers 503 itself once this many connections are open.
        limit_concurrency=http.maxconnections,
        backlog=max(2048, min(http.maxconnections * http.workers, 65535)),
        log_level="warning",
        log_config=log_config,
        access_log=False,
    )


_header_timeout: float | None = None


def _header_seconds() -> float:
    # Worker processes build the protocol from its import path, so the timeout comes from
    # the configuration they load, as the app does (WHARF_CONFIG and the environment).
    global _header_timeout
    if _header_timeout is None:
        _header_timeout = load_settings(os.environ.get("WHARF_CONFIG") or None).http.timeouts.header_seconds
    return _header_timeout


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with what it lacks: a connection whose request headers
    have not all arrived within http.timeouts.header (from the connection's start, or from
    the end of its previous response) is closed."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(_header_seconds(), self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        # A request whose headers did arrive (a pipelined one) is being served: not idle.
        serving = self.cycle is not None and not self.cycle.response_complete
        if not serving and not self.transport.is_closing():
            self.transport.close()
