"""The error body every /api/v0 refusal carries (the OCI Distribution shape, as DTR's API
answers too), declared once for the OpenAPI document."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field


class ErrorOut(BaseModel):
    code: str = Field(description="NAME_UNKNOWN, MANIFEST_UNKNOWN, NO_SUCH_JOB, INVALID_JSON...")
    message: str
    detail: Any = None


class ErrorsOut(BaseModel):
    errors: list[ErrorOut]


class ErrorResponse(JSONResponse):
    """An error body with every character beyond ASCII escaped: an error names what the
    client wrote, and JSON may carry a lone surrogate ("\\ud800"), which no UTF-8 body can
    hold (Starlette's own rendering failed on one, a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


# The largest offset a page may start at: databases hold offsets in 64-bit integers (SQLite
# refused larger ones with an OverflowError, a 500).
MAX_START = 2**62

# Every operation may be refused: 400 for a request that does not fit (never FastAPI's 422),
# 404 for something unknown, 405 when deletes are disabled or the registry is read-only.
Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {
    "4XX": {"model": ErrorsOut, "description": "Refused; the errors say why"},
}


def error(description: str) -> dict[str, Any]:
    """One refusal worth naming in the document, with the error body."""
    return {"model": ErrorsOut, "description": description}


def _moment(value: datetime) -> datetime:
    """A time the databases can compare: in UTC (a naive one is taken as UTC), within years
    1 to 9999 once there (9999-12-31T23:59-23:59 is not)."""
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


Moment = Annotated[datetime, AfterValidator(_moment)]
