"""The OCI Distribution error codes, each registered once with its message and HTTP status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    code: str
    message: str
    status: int


def _register(code: str, message: str, status: int) -> ErrorCode:
    return ErrorCode(code, message, status)


BLOB_UNKNOWN = _register("BLOB_UNKNOWN", "blob unknown to registry", 404)
BLOB_UPLOAD_INVALID = _register("BLOB_UPLOAD_INVALID", "blob upload invalid", 400)
BLOB_UPLOAD_UNKNOWN = _register("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", 404)
DIGEST_INVALID = _register("DIGEST_INVALID", "provided digest did not match uploaded content", 400)
MANIFEST_BLOB_UNKNOWN = _register(
    "MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", 404
)
MANIFEST_INVALID = _register("MANIFEST_INVALID", "manifest invalid", 400)
MANIFEST_UNKNOWN = _register("MANIFEST_UNKNOWN", "manifest unknown to registry", 404)
NAME_INVALID = _register("NAME_INVALID", "invalid repository name", 400)
NAME_UNKNOWN = _register("NAME_UNKNOWN", "repository name not known to registry", 404)
SIZE_INVALID = _register("SIZE_INVALID", "provided length did not match content length", 400)
# Not in the spec's table; the spec names the status (413) and Distribution the code.
MANIFEST_TOO_BIG = _register("SIZE_INVALID", "manifest exceeds the size limit", 413)
BODY_TOO_BIG = _register("SIZE_INVALID", "request body exceeds the size limit", 413)
RANGE_INVALID = _register("RANGE_INVALID", "invalid content range", 416)
PAGINATION_NUMBER_INVALID = _register("PAGINATION_NUMBER_INVALID", "invalid number of results requested", 400)
TAG_INVALID = _register("TAG_INVALID", "manifest tag did not match URI", 400)
UNAUTHORIZED = _register("UNAUTHORIZED", "authentication required", 401)
DENIED = _register("DENIED", "requested access to the resource is denied", 403)
# The admin API's own.
NO_SUCH_JOB = _register("NO_SUCH_JOB", "no job with this id", 404)
INVALID_JOB = _register("INVALID_JOB", "unknown job action", 400)
INVALID_SCHEDULE = _register("INVALID_SCHEDULE", "invalid schedule", 400)
NO_GC_RUN = _register("NO_GC_RUN", "no garbage collection has completed yet", 404)
# Accounts, teams and repositories (DTR's surface).
INVALID_NAME = _register("INVALID_NAME", "invalid account, team or repository name", 400)
INVALID_PASSWORD = _register("INVALID_PASSWORD", "invalid password", 400)
NAME_TAKEN = _register("NAME_TAKEN", "the name is taken", 400)
NO_SUCH_ACCOUNT = _register("NO_SUCH_ACCOUNT", "no such account", 404)
NO_SUCH_TEAM = _register("NO_SUCH_TEAM", "no such team", 404)
NO_SUCH_TOKEN = _register("NO_SUCH_TOKEN", "no such personal access token", 404)
NOT_A_MEMBER = _register("NOT_A_MEMBER", "not a member of the team", 404)
NO_SUCH_ACCESS = _register("NO_SUCH_ACCESS", "the team has no access here", 404)
# Team access is an organization's: to its repositories and namespace, for its own teams.
TEAM_ACCESS_INVALID = _register(
    "TEAM_ACCESS_INVALID", "team access is for an organization's repositories, to its own teams", 400
)
# The team whose members administer an organization keeps its name and stays.
OWNERS_TEAM = _register("OWNERS_TEAM", "the owners team cannot be renamed or deleted", 400)
INVALID_DURATION = _register("INVALID_DURATION", "invalid duration", 400)
INVALID_TEXT = _register("INVALID_TEXT", "invalid text", 400)
UNSUPPORTED = _register("UNSUPPORTED", "the operation is unsupported", 405)
# A token request (/auth/token) that cannot be answered as it stands: OAuth2's invalid_request.
TOKEN_REQUEST_INVALID = _register("INVALID_REQUEST", "invalid token request", 400)
TOOMANYREQUESTS = _register("TOOMANYREQUESTS", "too many requests", 429)
# Distribution's codes for a server that cannot take the request now, and for a body that
# stopped arriving (the spec names no timeout code; Distribution says UNKNOWN).
UNAVAILABLE = _register("UNAVAILABLE", "service unavailable", 503)
BODY_TIMEOUT = _register("UNKNOWN", "request body timed out", 408)
# Distribution's code for failures that are the server's, not the request's.
INTERNAL = _register("UNKNOWN", "unknown error", 500)
# Faults of what the registry stands on, with Distribution's code for them: the database
# cannot be reached (UNAVAILABLE above: 503, worth retrying), the blob storage or the
# database's disk is full (507, RFC 4918's status: retrying helps only once space is freed).
STORAGE_FULL = _register("UNAVAILABLE", "the registry's storage is full", 507)


class RegistryError(Exception):
    """A failure that the client is told about as an OCI error body."""

    def __init__(
        self,
        code: ErrorCode,
        detail: Any = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.detail = detail
        self.message = message or code.message
        self.headers = headers or {}
        super().__init__(f"{code.code}: {self.message}")

    @property
    def status(self) -> int:
        return self.code.status

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}


INTERNAL_ERROR = RegistryError(INTERNAL, None, "internal error; the server log has the details")
