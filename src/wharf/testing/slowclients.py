"""Slow and idle clients, as an attacker runs them: many sockets that send a blob upload's
headers and then withhold the body, or send their headers one byte at a time.

Used by bench/slowclients.py (measurements) and tests/test_slow_clients.py. Plain blocking
sockets and one thread that drips bytes, so a test can hold thousands of them beside its
own synchronous HTTP client.
"""

from __future__ import annotations

import contextlib
import http.client
import resource
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

# A digest no test pushes: the server starts a whole-blob upload and waits for its body.
_DIGEST = "sha256:" + "ab" * 32


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (at most the hard
    limit); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


REPOSITORY = "slow/clients"


def body_request(host: str, port: int, target: str | None = None, length: int = 1 << 20) -> bytes:
    """The headers of a blob upload announcing ``length`` bytes of body: a PATCH of the
    session at ``target``, or with none a monolithic POST (which Distribution 2.8 answers
    without reading the body, so measure it with sessions)."""
    method, path = (
        ("PATCH", target) if target else ("POST", f"/v2/{REPOSITORY}/blobs/uploads/?digest={_DIGEST}")
    )
    return (
        f"{method} {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def start_sessions(host: str, port: int, count: int) -> list[str]:
    """``count`` upload sessions started over one connection: the paths to PATCH."""
    paths = []
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        for _ in range(count):
            connection.request("POST", f"/v2/{REPOSITORY}/blobs/uploads/", headers={"Content-Length": "0"})
            response = connection.getresponse()
            response.read()
            if response.status != 202:
                raise RuntimeError(f"starting an upload answered {response.status}")
            location = urllib.parse.urlsplit(response.headers["Location"])
            paths.append(location.path + (f"?{location.query}" if location.query else ""))
    finally:
        connection.close()
    return paths


@dataclass
class SlowClients:
    """``body`` sockets that sent a request's headers and then nothing, and ``headers``
    sockets that send theirs one byte every ``drip`` seconds (never finishing)."""

    host: str
    port: int
    body: int = 0
    headers: int = 0
    drip: float = 1.0
    sessions: bool = False  # body sockets PATCH sessions of their own instead of a monolithic POST
    connect_timeout: float = 5.0
    sockets: list[socket.socket] = field(default_factory=list)
    dripping: list[tuple[socket.socket, bytes]] = field(default_factory=list)
    refused: int = 0  # connections the server refused or that could not be made in time
    # What the server sent on each socket that it answered or closed (b"" for a bare close).
    received: dict[int, bytes] = field(default_factory=dict)
    held_bodies: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError:
            self.refused += 1
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def start(self) -> SlowClients:
        raise_fd_limit(self.body + self.headers + 1024)
        targets: list[str | None] = [None] * self.body
        if self.sessions:
            targets = list(start_sessions(self.host, self.port, self.body))
        for target in targets:
            request = body_request(self.host, self.port, target)
            sock = self._connect()
            if sock is None:
                continue
            try:
                sock.sendall(request)
            except OSError:
                self.refused += 1
                sock.close()
                continue
            self.sockets.append(sock)
        self.held_bodies = len(self.sockets)  # sockets[:held_bodies] withhold a body
        # Headers that never end: a header line is added every time the request is used up.
        endless = body_request(self.host, self.port).replace(b"\r\n\r\n", b"\r\n") + b"X-Slow: 1\r\n" * 4096
        for _ in range(self.headers):
            sock = self._connect()
            if sock is None:
                continue
            self.sockets.append(sock)
            self.dripping.append((sock, endless))
        self._thread = threading.Thread(target=self._drip, name="slow-headers", daemon=True)
        self._thread.start()
        return self

    def _drip(self) -> None:
        position = 0
        while not self._stop.wait(self.drip if self.dripping else 0.5):
            for sock, data in self.dripping:
                with contextlib.suppress(OSError):
                    sock.send(data[position % len(data) : position % len(data) + 1])
            position += 1

    def wait_closed(self, deadline: float, at_least: int | None = None) -> int:
        """Poll until the server has answered or closed every socket (or ``at_least`` of
        them), or ``deadline`` (monotonic) passes; returns how many it has."""
        wanted = len(self.sockets) if at_least is None else at_least
        while True:
            for index, sock in enumerate(self.sockets):
                if index not in self.received:
                    answer = _answer(sock)
                    if answer is not None:
                        self.received[index] = answer
            if len(self.received) >= wanted or time.monotonic() > deadline:
                return len(self.received)
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets.clear()
        self.dripping.clear()

    def __enter__(self) -> SlowClients:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answer(sock: socket.socket) -> bytes | None:
    """What the server sent before closing this socket or while answering on it (b"" for a
    close or a reset without a word), or None while it is still waiting for us."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    finally:
        with contextlib.suppress(OSError):
            sock.setblocking(True)
