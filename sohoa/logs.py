"""Structured logs: one JSON object per line, one line per event, never a secret."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from sohoa.masking import MASK, is_secret_name, mask_text, mask_tree

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's own fields, secrets masked (by name, and inside every text)."""
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _RESERVED or key.startswith("_"):
            continue
        out[key] = MASK if is_secret_name(key) else (
            value if isinstance(value, bool | int | float) or value is None
            else mask_tree(value, key))
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": mask_text(record.getMessage()),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        base = f"{record.levelname.lower():7} {record.name}: {mask_text(record.getMessage())}"
        text = f"{base} {extras}".rstrip()
        if record.exc_info:
            text += "\n" + mask_text(self.formatException(record.exc_info))
        return text


def setup_logging(level: str = "INFO", json_format: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries are chatty at INFO about every reconnect; keep their warnings only.
    for noisy in ("kafka", "aiokafka", "faust", "mode", "urllib3", "PIL", "ocrmypdf"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
