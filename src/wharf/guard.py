"""Slow and idle clients cannot hold the registry: request bodies time out when idle, and
requests beyond the configured number in flight are refused at once.

The server bounds connections and times out slow headers (see cli.serve); what it cannot see
is a request whose headers arrived and whose body never comes: the app is waiting for it, so
that wait is bounded here, in the one place every request passes through.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BODY_TIMEOUT, UNAVAILABLE, RegistryError

log = logging.getLogger(__name__)

_DISCONNECT: Message = {"type": "http.disconnect"}


def _answer(status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> list[Message]:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        # The rest of the request may never come (or is not wanted): the connection goes.
        (b"connection", b"close"),
        *extra,
    ]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": payload},
    ]


def _timed_out(idle: float) -> list[Message]:
    error = RegistryError(BODY_TIMEOUT, {"idle": f"{idle:g}s"}, f"no request body bytes for {idle:g}s")
    return _answer(error.status, error.body(), [])


def _refused(limit: int) -> list[Message]:
    error = RegistryError(UNAVAILABLE, {"requests": limit}, f"more than {limit} requests in flight; retry")
    return _answer(error.status, error.body(), [(b"retry-after", b"1")])


class SlowClientGuard:
    """ASGI middleware: at most ``max_requests`` requests in flight in this process, and a
    request body that sends nothing for ``idle`` seconds is answered 408."""

    def __init__(self, app: ASGIApp, idle: float, max_requests: int) -> None:
        self.app = app
        self.idle = idle
        self.max_requests = max_requests
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_requests:
            for message in _refused(self.max_requests):
                await send(message)
            return
        self.in_flight += 1
        try:
            await self._serve(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        idle = self.idle
        body_done = False
        timed_out = False
        started = False

        async def guarded_receive() -> Message:
            nonlocal body_done, timed_out
            if timed_out:
                return _DISCONNECT
            if body_done:
                # After the body only a disconnect can come; waiting for it is not idling.
                return await receive()
            try:
                async with asyncio.timeout(idle):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                log.info("%s %s: no body bytes for %gs, answered 408", scope["method"], scope["path"], idle)
                # The app sees the client as gone: what it wrote so far is discarded as for
                # any disconnect, and its answer is replaced by the 408 below.
                return _DISCONNECT
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                if not started:
                    started = True
                    for answer in _timed_out(idle):
                        await send(answer)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)
        if timed_out and not started:
            for answer in _timed_out(idle):
                await send(answer)
