"""The ASGI application, wired explicitly from the settings: nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from .api.app import create_api, http_error
from .config import Settings, load_settings
from .guard import SlowClientGuard
from .headers import ResponseHeaders
from .malloc import return_big_buffers
from .metrics import MetricsMiddleware, metrics
from .oci.router import dispatch, version_check
from .oci.token import token_get, token_post
from .services.registry import Registry
from .wiring import build_registry, build_runner, build_storage, build_watcher

__all__ = ["app_from_environment", "build_registry", "build_storage", "create_app"]

V2_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class _AnyPath(PathConvertor):
    """Starlette's ``path`` stops at a newline (``.*``): /v2 takes every path, so that a tab, CR
    or LF in a name or tag reaches its grammar and is refused (400) rather than not routed."""

    regex = "(?s:.*)"


register_url_convertor("anypath", _AnyPath())
# Seconds a stopping server gives its job worker to hand its running job back.
SHUTDOWN_GRACE = 10.0


async def healthz(request: Request) -> Response:
    """The process answers (liveness)."""
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    """The database and the blob storage answer, and the directories writes go through have
    room (readiness): 503 naming what does not."""
    registry: Registry = request.app.state.registry
    problems = await registry.health.problems()
    if problems:
        return PlainTextResponse("\n".join(problems) + "\n", status_code=503)
    return PlainTextResponse("ready")


def create_app(settings: Settings) -> Starlette:
    registry = build_registry(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        # Every process serving /v2 follows read-only maintenance, worker or not.
        watching = asyncio.create_task(build_watcher(settings, registry).run(stop))
        worker = None
        if settings.jobs.enabled:
            worker = asyncio.create_task(build_runner(settings, registry).run(stop))
        yield
        stop.set()
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        if worker is not None:
            # The worker interrupts a running job and hands it back (waiting again) for
            # another replica to take at once. Should that hang, the job is cancelled and
            # left to its heartbeat: another worker takes it over after jobs.stale.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(worker, SHUTDOWN_GRACE)
        await registry.close()

    app = Starlette(
        routes=[
            Route("/v2/", version_check, methods=["GET", "HEAD"]),
            Route("/v2/{path:anypath}", dispatch, methods=V2_METHODS),
            Route("/auth/token", token_get, methods=["GET"]),
            Route("/auth/token", token_post, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET"]),
            Mount("/api/v0", app=create_api(registry)),
        ],
        middleware=[
            # Outermost: the guard's own 503 and 408 answers carry them too. Only when some
            # are configured: a layer less on every request otherwise.
            *([Middleware(ResponseHeaders, headers=settings.http.headers)] if settings.http.headers else []),
            Middleware(
                SlowClientGuard,
                idle=settings.http.timeouts.idle_seconds,
                max_requests=settings.http.maxrequests,
            ),
            Middleware(MetricsMiddleware),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.settings = settings
    return app


def app_from_environment() -> Starlette:
    """The factory server workers call: the configuration path comes in WHARF_CONFIG."""
    return_big_buffers()  # each worker process: part buffers go back to the system when freed
    return create_app(load_settings(os.environ.get("WHARF_CONFIG") or None))
