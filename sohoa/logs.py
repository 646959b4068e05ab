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


_LABELS = {"WARNING": "cảnh báo", "ERROR": "lỗi", "CRITICAL": "lỗi nghiêm trọng"}


class TerminalFormatter(logging.Formatter):
    """A warning for the person at the keyboard: one short line, no JSON, no logger name."""

    def format(self, record: logging.LogRecord) -> str:
        label = _LABELS.get(record.levelname, record.levelname.lower())
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{label}: {mask_text(record.getMessage())} {extras}".rstrip()


def setup_logging(level: str = "INFO", json_format: bool = True, *, interactive: bool = False,
                  stream: Any = None) -> None:
    """Logs go to stderr, never stdout (stdout is a command's output: tables, JSON, paths).

    A service (``interactive=False``: watch, streams, consume, web) logs as configured
    whatever stderr is: its supervisor keeps the lines. An interactive command whose stderr
    is a terminal shows warnings and errors only, as short text lines, so no JSON line lands
    among the table it prints; with stderr redirected (cron, scripts) it logs as configured.
    """
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    at_terminal = interactive and _isatty(stream)
    if at_terminal:
        handler.setFormatter(TerminalFormatter())
    else:
        handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())) if at_terminal
                  else level.upper())
    # Client libraries are chatty at INFO about every reconnect; keep their warnings only.
    for noisy in ("kafka", "aiokafka", "faust", "mode", "urllib3", "PIL", "ocrmypdf"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Except the group's joins, assignments and revocations: rare, and what tells an operator
    # which member holds which partitions when progress stops.
    logging.getLogger("kafka.coordinator").setLevel(root.level)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
