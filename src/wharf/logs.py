"""Logging for `wharf serve` and `wharf worker`: text lines (the default) or JSON lines
(``log.formatter: json``), one object per record with its time, level, logger, message and
the record's extra fields (an access line's request id, method, route, status and duration;
a job line's job id and action). Distribution's ``log.fields`` are added to every line.

The same configuration goes to the HTTP server, which applies it again in each of its worker
processes, so the server's own lines come out in the same format."""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .config import LogConfig

# Attributes every LogRecord has: anything else on a record came as an extra field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
TEXT_FORMAT = "%(levelname)s:%(name)s:%(message)s"  # logging.basicConfig's, as before


Fields = Mapping[str, str | int | float | bool]


class JSONFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot hold are written as their str(). The
    configured ``log.fields`` are keys of every line (a record's own field of that name wins)."""

    def __init__(self, fields: Fields | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in self.fields.items():
            entry.setdefault(key, value)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and (key not in entry or key in self.fields):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``LEVEL:logger:message`` followed by the configured ``log.fields`` as ``key=value``."""

    def __init__(self, fmt: str = TEXT_FORMAT, fields: Fields | None = None) -> None:
        super().__init__(fmt)
        self.suffix = "".join(f" {key}={_text_value(value)}" for key, value in (fields or {}).items())

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record) + self.suffix


def _text_value(value: object) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return json.dumps(text) if not text or any(c.isspace() or c in '"=' for c in text) else text


def level(log: LogConfig) -> int:
    return {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}[log.level]


def logging_config(log: LogConfig) -> dict[str, Any]:
    """A logging.config.dictConfig for Wharf's records and the HTTP server's (granian, uvicorn)."""
    formatter: dict[str, Any] = {"format": TEXT_FORMAT}
    if log.formatter == "json":
        formatter = {"()": JSONFormatter, "fields": dict(log.fields)}
    elif log.fields:
        formatter = {"()": TextFormatter, "fields": dict(log.fields)}
    route = {"handlers": ["wharf"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"wharf": formatter},
        "handlers": {
            "wharf": {"class": "logging.StreamHandler", "formatter": "wharf", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["wharf"], "level": level(log)},
        # granian's own loggers (it sets their levels itself) write through the same handler.
        "loggers": {"_granian": dict(route), "granian.access": dict(route)},
    }


def configure(log: LogConfig) -> dict[str, Any]:
    """Set up this process's logging; the configuration, for the HTTP server to apply in its workers."""
    config = logging_config(log)
    logging.config.dictConfig(config)
    return config
