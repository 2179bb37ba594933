"""The ASGI application, wired explicitly from the settings: nothing is built at import time."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from .api.app import create_api
from .config import Settings, load_settings
from .meta.sql import SQLMetadataStore
from .oci.router import dispatch, version_check
from .services.policy import Policy
from .services.registry import Registry
from .storage.base import BlobStore
from .storage.filesystem import FilesystemBlobStore

V2_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def build_storage(settings: Settings) -> BlobStore:
    s3 = settings.storage.s3
    if s3 is None:
        return FilesystemBlobStore(settings.storage.filesystem.rootdirectory, fsync=settings.storage.fsync)
    from .storage.s3 import S3BlobStore

    return S3BlobStore(
        s3.bucket,
        region=s3.region,
        endpoint=s3.regionendpoint or None,
        access_key=s3.accesskey or None,
        secret_key=s3.secretkey or None,
        root=s3.rootdirectory,
        path_style=s3.forcepathstyle,
        verify=not s3.skipverify,
        spool_directory=s3.spooldirectory or None,
    )


def build_registry(settings: Settings) -> Registry:
    storage = build_storage(settings)
    meta = SQLMetadataStore(settings.database_url)
    policy = Policy(
        delete_enabled=settings.storage.delete.enabled,
        readonly=settings.storage.maintenance.readonly.enabled,
        redirect=not settings.storage.redirect.disable,
    )
    return Registry.build(meta, storage, policy)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(settings: Settings) -> Starlette:
    registry = build_registry(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await registry.close()

    app = Starlette(
        routes=[
            Route("/v2/", version_check, methods=["GET", "HEAD"]),
            Route("/v2/{path:path}", dispatch, methods=V2_METHODS),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Mount("/api/v0", app=create_api(registry)),
        ],
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.settings = settings
    return app


def app_from_environment() -> Starlette:
    """The factory server workers call: the configuration path comes in WHARF_CONFIG."""
    return create_app(load_settings(os.environ.get("WHARF_CONFIG") or None))
