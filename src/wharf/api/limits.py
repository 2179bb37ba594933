"""The size cap on /api/v0 request bodies.

Every body the admin API takes is a small JSON document (a job to start, the GC settings, a
schedule), and the framework reads a body whole before parsing it: without a cap, one
400 MiB request held about 1.7 GiB of the server's memory. A body over the cap is refused
with 413 before it is read (by its Content-Length) or as soon as the bytes received pass
the cap (a chunked body), so nothing of it reaches a route.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Far above any document the API takes (a settings document is well under 1 KiB).
MAX_BODY = 1 << 20
# What of a refused body is still read, so that its sender hears the refusal.
DRAIN_LIMIT = 16 << 20
CODE = "SIZE_INVALID"  # Distribution's code for a body over a limit, as /v2 answers it


def _message(limit: int) -> str:
    return f"request body over {limit} bytes: the admin API takes JSON documents of at most {limit} bytes"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the cap. The routes let an HTTPException
    through unchanged, so the API's handler for it answers (413, the JSON error body)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=_message(limit))
        self.limit = limit


class BodyLimit:
    """ASGI middleware: request bodies of at most ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Read (and drop) what the client is still sending, up to a bound, so it
                    # is listening when the 413 comes: a server that closes on a client still
                    # sending gets its answer lost to a connection reset.
                    drained = 0
                    while message.get("more_body", False) and drained < DRAIN_LIMIT:
                        message = await receive()
                        drained += len(message.get("body", b""))
                    raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            # Not answered on the way (read outside a route, say): answered here.
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"errors": [{"code": CODE, "message": _message(self.limit), "detail": {"limit": self.limit}}]}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        # The unread body is not wanted: the connection closes after the answer.
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses such a request before it gets here
    return None
