"""Structured logs: one JSON object a line, never a secret, a signature or a full email."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "configure_logging", "mask_email"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_FALLBACK_TEXT = 500
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")


def mask_email(text: str) -> str:
    """`ada@example.com` → `a***@example.com`, wherever it appears in `text`."""
    return _EMAIL.sub(r"\1***@\2", text) if "@" in text else text


class JsonFormatter(logging.Formatter):
    """Formats a record and its `extra=` fields as one JSON line, emails masked.

    Never raises: a record that cannot be formatted (an `extra` value that refers to itself, one
    nested too deep for `json.dumps`, a message whose arguments do not fit it, a traceback that
    cannot be rendered) becomes a line with what could be read and `log_error` naming why, so
    logging a failure can never become a failure of its own (a 500, or a lost webhook)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:  # the formatter is the last line: it must not raise
            return self._fallback(record, exc)

    def _format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return mask_email(json.dumps(out, default=str))

    @staticmethod
    def _fallback(record: logging.LogRecord, exc: BaseException) -> str:
        def safe(read: Any) -> str:
            try:
                return str(read())[:_FALLBACK_TEXT]
            except Exception:  # the fallback names what it can read
                return "?"

        out = {
            "ts": safe(lambda: datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")),
            "level": safe(lambda: record.levelname.lower()),
            "logger": safe(lambda: record.name),
            "msg": safe(lambda: record.msg),
            "log_error": type(exc).__name__,
        }
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_class"] = record.exc_info[0].__name__
        return mask_email(json.dumps(out))


def configure_logging(level: str = "INFO") -> None:
    """Send hooktrack's and uvicorn's logs to stderr as JSON lines."""
    # What a record would carry that the JSON line never shows: finding the caller's frame,
    # thread, process and multiprocessing names cost more than formatting the line (the logging
    # HOWTO's "Optimization" section names these switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel("WARNING")
    logging.getLogger("httpx").setLevel("WARNING")
