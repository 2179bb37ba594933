"""Which unexpected errors are faults of what the registry stands on, and how they answer:
the database unreachable is 503 UNAVAILABLE (the client may retry), a full disk under the
blob store or the database is 507. Both HTTP layers ask here, so /v2 and /api/v0 agree.

Looked for along the whole chain of causes: drivers and SQLAlchemy wrap the OSError or the
driver's own error that says what happened."""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Iterator

import sqlalchemy as sa

from .errors import INTERNAL_ERROR, STORAGE_FULL, UNAVAILABLE, RegistryError

_FULL = {errno.ENOSPC, errno.EDQUOT}
_NETWORK = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        original = current.orig if isinstance(current, sa.exc.DBAPIError) else None
        current = original or current.__cause__ or current.__context__


def _is_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _FULL:
        return True
    return isinstance(error, sqlite3.OperationalError) and error.sqlite_errorcode == sqlite3.SQLITE_FULL


def _is_unreachable(error: BaseException) -> bool:
    if isinstance(error, sa.exc.DBAPIError):
        # A connection that broke mid-statement, or none to be had. Not every InterfaceError:
        # asyncpg raises one for a statement over 32,767 parameters too (a bug, a 500); those
        # about the connection carry a connection error as their cause, found further down.
        return bool(error.connection_invalidated) or isinstance(error, sa.exc.OperationalError)
    if isinstance(error, OSError) and not _is_full(error):
        # Refused, reset, unreachable, timed out: sockets, not files (those are bugs or full).
        return isinstance(error, ConnectionError | TimeoutError) or error.errno in _NETWORK
    # asyncpg's own, raised from connect() unwrapped: CannotConnectNowError ("the database
    # system is starting up / shutting down"), ConnectionDoesNotExistError and the like.
    module = type(error).__module__
    return module.startswith("asyncpg") and type(error).__name__ in {
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "AdminShutdownError",
        "CrashShutdownError",
        "TooManyConnectionsError",
    }


def _is_object_store_down(error: BaseException) -> bool:
    """The S3 server failed or never answered (after botocore's own retries): a 5xx, a
    timeout, a connection that broke or could not be made. Its 4xx are requests' faults."""
    module = type(error).__module__
    if not module.startswith(("botocore", "urllib3")):
        return False
    response = getattr(error, "response", None)
    if isinstance(response, dict):  # a ClientError: what the server answered
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return isinstance(status, int) and status >= 500
    return type(error).__name__ in {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ProxyConnectionError",
        "ResponseStreamingError",
        "ProtocolError",
    }


def answer_for(log: logging.Logger, method: str, path: str, error: BaseException) -> RegistryError:
    """The answer an HTTP layer gives for an unexpected error, logged to its ``log``: a
    fault of storage or database as a warning (not the registry's bug), anything else as
    an error with its traceback, answered 500 UNKNOWN."""
    known = fault(error)
    if known is not None:
        log.warning("%s %s: %s (%s: %s)", method, path, known.message, type(error).__name__, error)
        return known
    log.error("%s %s failed", method, path, exc_info=error)
    return INTERNAL_ERROR


def fault(error: BaseException) -> RegistryError | None:
    """The answer for an error that is a fault of storage or database, or None for a bug."""
    causes = list(_chain(error))
    if any(_is_full(cause) for cause in causes):
        return RegistryError(
            STORAGE_FULL, None, "the registry's storage is full; try again once space is freed"
        )
    if any(_is_unreachable(cause) or _is_object_store_down(cause) for cause in causes):
        return RegistryError(
            UNAVAILABLE, None, "the registry cannot reach its database or storage; try again"
        )
    return None
