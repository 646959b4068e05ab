"""The parse process of `sohoa consume`: COPY bytes made without a connection load the same rows
as psycopg's own ``write_row``; the worker survives a group stop signal, dies with its parent,
and a dead worker costs no batch. Plus the applier's counts on the shortcut (nothing dropped)
and the general path (replays dropped)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from consumers.apply import STAGE_COLUMNS, BatchApplier, Record, StageRow, prepare, stage_rows
from consumers.apply.copy_wire import copy_binary
from consumers.apply.staging import STAGE_OIDS
from consumers.parsing import ParsePool
from sohoa.events import CheckResult, PageChecked, PageScanned
from tests.support.progress_store import records

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
SHA = "a" * 64


def _page(no: int, site: str = "xa-a") -> PageScanned:
    return PageScanned(site_id=site, file_code="F1", fonds="P", document="QĐ 15.pdf",
                       page_index=no, document_pages=9, sha256=SHA, document_sha256=SHA,
                       uri=f"file:///x/{no}\tq\\r.tif", path=f"x/{no}\n.tif",
                       size_bytes=10, media_type="image/tiff",
                       occurred_at=T0 + timedelta(minutes=no))


def _check(no: int) -> PageChecked:
    return PageChecked(site_id="xa-a", file_code="F1", fonds="P", document="QĐ 15.pdf",
                       page_index=no, sha256=SHA, width_mm=209.9, height_mm=297,
                       passed=False, occurred_at=T0 + timedelta(hours=1, minutes=no),
                       checks=[CheckResult(check="độ phân giải, \"dpi\"", value=1, threshold=300,
                                           passed=False),
                               CheckResult(check="{nghiêng}\\", value=0.5, passed=True)])


def _table(conn: psycopg.Connection, name: str) -> list[tuple]:
    return conn.execute(f"SELECT * FROM {name} ORDER BY seq").fetchall()


def test_copy_binary_loads_the_same_rows_as_psycopg_write_row(pg) -> None:
    _dsn, conn = pg
    recs = records([_page(1), _page(2), _check(1), _check(2)])
    # As a producer may send it: an integer where the model holds a float.
    check_value = recs[2].value
    assert check_value is not None
    recs[2] = Record(recs[2].topic, 0, 2, check_value.replace(b'"value":1.0', b'"value":1'))
    assert b'"value":1,' in (recs[2].value or b"")
    rows, _ = stage_rows(recs)
    # Values a COPY format must escape, and a zone other than UTC.
    rows.append(StageRow(99, "e\t99", "PageChecked", "xã\\b", None, "F\n1", "d\\o\tc", 3, None,
                         None, 1, SHA, None,
                         datetime(2026, 1, 1, 7, tzinfo=timezone(timedelta(hours=7))), "t", 0,
                         5, None, None, None, None, True, 1.5, None,
                         ["a,b", 'q"x', "{c}", "d\\e", "ê"], '{"k": "v\\tw"}'))
    BatchApplier(conn, "g")  # the staging table's shape
    cols = ", ".join(STAGE_COLUMNS)
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE a AS SELECT * FROM stage WITH NO DATA")
        with conn.cursor().copy(f"COPY a ({cols}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        conn.execute("CREATE TEMP TABLE c AS SELECT * FROM stage WITH NO DATA")
        # What the applier sends: the binary format, typed as the staging columns.
        with conn.cursor().copy(f"COPY c ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(copy_binary(rows, STAGE_OIDS))
        a, c = _table(conn, "a"), _table(conn, "c")
    assert len(a) == len(rows)
    assert a == c
    # The checks are stored as sent: 1 stays 1, text keeps its diacritics.
    doc = next(r for r in a if r[2] == "PageChecked")[STAGE_COLUMNS.index("doc")]
    assert doc[0] == {"check": 'độ phân giải, "dpi"', "value": 1, "threshold": 300,
                      "passed": False}
    assert isinstance(doc[0]["value"], int)


def test_applied_counts_with_and_without_replays_in_the_batch(pg) -> None:
    _dsn, conn = pg
    applier = BatchApplier(conn, "g")
    first = records([_page(1), _page(2), _check(1)])
    with conn.transaction():
        res = applier.apply(first)
    assert res.applied == Counter({"PageScanned": 2, "PageChecked": 1})
    assert res.duplicates == 0
    # Two replayed, two new (one of them twice in the batch).
    c2 = _check(2)
    batch = [*first[:2], *records([_page(3), c2, c2], start=3)]
    with conn.transaction():
        res = applier.apply(batch)
    assert res.applied == Counter({"PageScanned": 1, "PageChecked": 1})
    assert res.duplicates == 3
    assert conn.execute("SELECT count(*) FROM pages").fetchone()[0] == 3


def _pool_worker_pid(pool: ParsePool) -> int:
    pool.warm()
    procs = pool._pool._processes  # type: ignore[union-attr]
    (pid,) = procs.keys()
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_parse_worker_ignores_a_stop_signal_and_parses_the_last_batch() -> None:
    recs = records([_page(1), _page(2)])
    with ParsePool() as pool:
        pid = _pool_worker_pid(pool)
        os.kill(pid, signal.SIGTERM)  # as `kill` of the whole process group does
        os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert _alive(pid)
        got = pool.submit(recs).result()
    assert got.staged == 2 and got.records == recs
    assert got.data == prepare(recs).data


def test_a_dead_parse_worker_costs_no_batch() -> None:
    recs = records([_page(1), _page(2), _check(1)])
    with ParsePool() as pool:
        pid = _pool_worker_pid(pool)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        got = pool.submit(recs).result()  # parsed in-process, a new worker started
        assert got.staged == 3 and got.records == recs
        again = pool.submit(recs).result()
        assert again.staged == 3
        assert _pool_worker_pid(pool) != pid


_ORPHAN = """
import sys, time
from consumers.parsing import ParsePool
pool = ParsePool()
pool.warm()
print(next(iter(pool._pool._processes)), flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
def test_parse_worker_exits_when_the_consumer_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE,
                              text=True)
    try:
        worker = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert _alive(worker)
        parent.kill()  # kill -9 of the consumer alone: nothing tells the worker
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the parse worker outlived its parent"
    finally:
        parent.kill()
        parent.wait()
