"""Is this error a full disk? One answer for the site agent's outbox and the OCR worker's
output, which both wait for space instead of failing what they were writing."""

from __future__ import annotations

import errno
import sqlite3

_MESSAGES = ("No space left on device", "Disk quota exceeded", "disk is full")


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, means a full disk or quota: an
    ``OSError`` ENOSPC/EDQUOT, SQLite's SQLITE_FULL, or a child's message saying so
    (Ghostscript and ocrmypdf report it as text)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(e, sqlite3.Error) and \
                getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if any(m in str(e) for m in _MESSAGES):
            return True
        e = e.__cause__ or e.__context__
    return False
