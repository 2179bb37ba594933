"""Distribution's ``http.headers``: headers added to every response (``X-Content-Type-Options:
nosniff``, ``Strict-Transport-Security``), the answers of /v2, /api/v0, health and metrics alike.

Distribution adds them before its handler runs, and a handler that sets one of them replaces
it; here, likewise, a header the response sets itself is left as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ResponseHeaders:
    """ASGI middleware adding the configured headers to each response that lacks them."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, Sequence[str]]) -> None:
        self.app = app
        self.extra = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, values in headers.items()
            for value in values
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(name).lower() for name, _value in headers}
                added = [(name, value) for name, value in self.extra if name not in present]
                if added:
                    message = {**message, "headers": headers + added}
            await send(message)

        await self.app(scope, receive, send_with_headers)
