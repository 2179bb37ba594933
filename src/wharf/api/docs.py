"""The interactive API documentation (Swagger UI) at /api/v0/docs, served whole by Wharf:
its script, style and icon come from the ``fastapi-offline`` package (Swagger UI's
distribution files, installed with Wharf), not from a CDN, so the page works offline."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, Response

router = APIRouter(include_in_schema=False)

# The files the page loads, and their types; nothing else of the package is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
# No validator badge: Swagger UI would ask an online validator about the document.
PARAMETERS = {"validatorUrl": None}


def _assets() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon.png",
        swagger_ui_parameters=PARAMETERS,
    )


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no documentation asset {name!r} (there are {', '.join(ASSETS)})")
    return FileResponse(_assets() / name, media_type=media_type, headers={"Cache-Control": "max-age=86400"})
