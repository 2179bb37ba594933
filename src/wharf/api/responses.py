"""The error body every /api/v0 refusal carries (the OCI Distribution shape, as DTR's API
answers too), declared once for the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field


class ErrorOut(BaseModel):
    code: str = Field(description="NAME_UNKNOWN, MANIFEST_UNKNOWN, NO_SUCH_JOB, INVALID_JSON...")
    message: str
    detail: Any = None


class ErrorsOut(BaseModel):
    errors: list[ErrorOut]


# The largest offset a page may start at: databases hold offsets in 64-bit integers (SQLite
# refused larger ones with an OverflowError, a 500).
MAX_START = 2**62

# Every operation may be refused: 400 for a request that does not fit (never FastAPI's 422),
# 404 for something unknown, 405 when deletes are disabled or the registry is read-only.
ERRORS: dict[int | str, dict[str, Any]] = {
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
