"""Starting the HTTP server (granian or uvicorn) with the limits that keep slow and idle
clients from holding every connection: a header timeout, a bound on connections, and
enough file descriptors for that bound.

The request-body timeout and the bound on requests in flight are the app's own (guard.py):
neither server times out a body that stops arriving.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import re
import resource
import socket
import sys
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import HTTPConfig, Settings, load_settings
from .tls import TLSFiles

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


class ListenError(Exception):
    """The configured address cannot be listened on; the message is one line naming it."""


# A host name as RFC 1123 allows one: dot-separated labels of letters, digits and hyphens.
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _addr_key() -> str:
    """How the user wrote the address: the environment variable wins over the file."""
    return "WHARF_HTTP_ADDR" if "WHARF_HTTP_ADDR" in os.environ else "http.addr"


def _backlog(http: HTTPConfig) -> int:
    return max(1024, min(http.maxconnections * http.workers, 65535))


def listen(http: HTTPConfig) -> socket.socket:
    """Bind and listen on http.addr, before anything says "serving on": the one socket that
    every worker process of this server accepts on. It is bound without SO_REUSEPORT (which
    granian sets when its workers bind for themselves), so a second `wharf serve` or any
    other program on the same address is refused here instead of silently sharing the port.
    A host name (``localhost:5000``) is resolved, IPv4 first as Go's listeners do."""
    where = f"cannot listen on {http.addr} ({_addr_key()})"
    host = http.bind_host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME.fullmatch(host):
            raise ListenError(f"{where}: {host!r} is not a host name or an IP address") from None
    try:
        found = socket.getaddrinfo(host, http.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ListenError(f"{where}: cannot resolve {host!r}: {error.strerror}") from None
    family, kind, proto, _name, address = sorted(found, key=lambda info: info[0] != socket.AF_INET)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR only lets a restart bind while old connections linger in TIME_WAIT:
        # on Linux it never lets two sockets listen on one address.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_backlog(http))
    except OSError as error:
        sock.close()
        raise ListenError(f"{where}: {_listen_problem(error, str(address[0]))}") from None
    sock.set_inheritable(True)
    return sock


def _listen_problem(error: OSError, ip: str) -> str:
    if error.errno == errno.EADDRINUSE:
        return "the port is already in use (by another program, or another wharf serve)"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{ip} is not an address of this machine"
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return error.strerror or str(error)


def bound_address(sock: socket.socket) -> str:
    """HOST:PORT of a listening socket (the port the system chose, for port 0)."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_granian(
    settings: Settings, log_config: dict[str, Any] | None, sock: socket.socket, tls: TLSFiles | None = None
) -> None:
    from granian._granian import SocketHolder
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.server import MPServer

    http = settings.http
    backlog = _backlog(http)

    class BoundGranian(MPServer):
        """granian serving on the socket `wharf serve` bound: on Linux granian would have
        each worker bind with SO_REUSEPORT, which lets unrelated servers share a port."""

        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            # The workers inherit the socket: they must be forked (granian spawns them
            # where Python's default is not fork, as from 3.14 on).
            self._spawn_method = "fork"

        def _init_shared_socket(self) -> None:
            self._ssp = None
            # granian's holder closes what it holds: give it a descriptor of its own.
            # (granian's stub lacks the arguments its SocketHolder takes: fd, is_uds, backlog.)
            holder: Any = SocketHolder(os.dup(sock.fileno()), False, backlog)  # type: ignore[call-arg]
            self._shd = holder
            self._sfd = holder.get_fd()
            self._sso = None

    if sys.platform != "linux":  # pragma: no cover
        raise ListenError("wharf serve on granian runs on Linux (use --server uvicorn elsewhere)")
    BoundGranian(
        target="wharf.app:app_from_environment",
        factory=True,
        address=http.bind_host,
        port=sock.getsockname()[1],
        interface=Interfaces.ASGI,
        workers=http.workers,
        # backpressure is granian's bound on connections per worker: beyond it, new ones
        # wait in the listen backlog until one closes (the timeouts make that soon).
        backpressure=http.maxconnections,
        backlog=backlog,
        # HTTP/1.1 only, also over TLS (where granian would offer h2 too): the header timeout
        # below, which keeps slow clients from holding every connection, is HTTP/1's.
        http=HTTPModes.http1,
        # hyper's header timeout also closes keep-alive connections idle that long.
        http1_settings=HTTP1Settings(header_read_timeout=max(1, round(http.timeouts.header_seconds * 1000))),
        log_access=False,
        log_level="warning",
        log_dictconfig=log_config,
        **(
            {}
            if tls is None
            else {
                "ssl_cert": tls.certificate,
                "ssl_key": tls.key,
                "ssl_protocol_min": SSLProtocols(tls.minimum),
                "ssl_ca": tls.client_cas,
                # granian with ssl_ca but without ssl_client_verify accepts clients without a
                # certificate, and verifies the certificate of those that present one.
                "ssl_client_verify": tls.client_cas is not None and tls.client_required,
            }
        ),
    ).serve()


def run_uvicorn(
    settings: Settings, log_config: dict[str, Any] | None, sock: socket.socket, tls: TLSFiles | None = None
) -> None:
    import ssl

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    http = settings.http
    config = uvicorn.Config(
        "wharf.app:app_from_environment",
        factory=True,
        host=http.bind_host,
        port=sock.getsockname()[1],
        workers=http.workers,
        loop="uvloop",
        http="wharf.serving:HeaderTimeoutProtocol",
        # uvicorn answers 503 itself once this many connections are open.
        limit_concurrency=http.maxconnections,
        backlog=_backlog(http),
        log_level="warning",
        log_config=log_config,
        access_log=False,
        # Python's ssl refuses protocols older than TLS 1.2 by itself.
        ssl_certfile=str(tls.certificate) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        ssl_ca_certs=str(tls.client_cas) if tls and tls.client_cas else None,
        ssl_cert_reqs=(
            ssl.CERT_NONE
            if tls is None or tls.client_cas is None
            else ssl.CERT_REQUIRED
            if tls.client_required
            else ssl.CERT_OPTIONAL
        ),
    )
    # As uvicorn.run does, but on the socket already bound.
    if http.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
        return
    config.load_app()
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)


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
