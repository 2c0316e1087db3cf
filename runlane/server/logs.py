"""Logging setup for the server process: JSON lines (production) or text (dev).

A JSON line holds ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, every non-standard attribute passed through ``extra=`` (for
example ``run_id`` and ``thread_id``) and, for an exception, ``exc_info``
with the formatted traceback. Values that are not JSON are written with
``str()``. :func:`configure_logging` replaces the root handlers, so calling
it twice does not duplicate lines; uvicorn's loggers propagate to the root.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

__all__ = ["JsonFormatter", "configure_logging", "uvicorn_log_config"]

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(
    level: str = "info", fmt: Literal["json", "text"] = "json", *, stream: Any = None
) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``fmt``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def uvicorn_log_config() -> dict[str, Any]:
    """A uvicorn ``log_config`` that leaves formatting to the root logger."""
    return {"version": 1, "disable_existing_loggers": False}
