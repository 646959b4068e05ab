"""The one "is this a full disk?" answer the agent's outbox and the OCR worker both wait on."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from sohoa.disk import disk_full


def _raised_from(cause: BaseException) -> RuntimeError:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError("ocrmypdf failed") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    sqlite3.OperationalError("database or disk is full"),
    RuntimeError("gs: Error writing /tmp/x: No space left on device"),
    _raised_from(OSError(errno.ENOSPC, "No space left on device")),
], ids=["enospc", "edquot", "sqlite", "message", "chained"])
def test_full_disks_are_recognised(exc: BaseException) -> None:
    assert disk_full(exc)


@pytest.mark.parametrize("exc", [
    OSError(errno.EACCES, "Permission denied"),
    sqlite3.OperationalError("database is locked"),
    ValueError("bad page"),
    _raised_from(ValueError("bad page")),
], ids=["eacces", "locked", "value", "chained-other"])
def test_other_errors_are_not(exc: BaseException) -> None:
    assert not disk_full(exc)


def test_a_real_sqlite_full_error(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("CREATE TABLE t (b BLOB)")
    db.execute("PRAGMA max_page_count = 8")   # SQLite reports SQLITE_FULL when it is reached
    with pytest.raises(sqlite3.OperationalError) as exc:
        db.execute("INSERT INTO t VALUES (zeroblob(1000000))")
    assert disk_full(exc.value)
