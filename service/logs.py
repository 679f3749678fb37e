"""Logging set-up: one JSON object per line (default) or plain text.

Structured fields go in ``extra=`` (stream_id, segment, durations) and appear
as top-level keys. Transcripts are user data: never log them at INFO.
"""
from __future__ import annotations

import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else came from extra=.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        line = super().format(record)
        return line + (" " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


class _StaticFields(logging.Filter):
    def __init__(self, fields: dict[str, object]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            setattr(record, key, value)
        return True


def configure_logging(level: str = "INFO", fmt: str = "json", fields: dict[str, object] | None = None) -> None:
    """Route the root logger to stderr in the chosen format (replaces existing handlers).

    ``fields`` go on every line (a worker process adds ``worker``: its index)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if fields:
        handler.addFilter(_StaticFields(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
