"""The idle check reads the files still open, not the whole table, and an open file still
times out after the worker is killed and restarted on its disk, and after its partitions
move to a worker with an empty disk (real Kafka, real Faust workers).

The idle check runs once a minute in production; at 5 million pages the table holds 200,000
files, almost all of them assembled long ago. Reading them all at each check is the cost this
pins down: the worker's own counters (``/metrics``) say how many table values each check read.
"""

from __future__ import annotations

import re
import signal
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from infra.procs import free_port
from sohoa.events import FileAssembled
from tests.support.procs import SohoaProcess, wait_for
from tests.support.streams_helpers import closed, fake_page, read_all, send, streams_env

pytestmark = pytest.mark.integration
SITE = "xa-mo-ho-so"


def _metrics(port: str) -> dict[str, float]:
    """The worker's sohoa_assembly_* series (unlabelled), or {} while it is not serving."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {m[0]: float(m[1]) for m in re.findall(r"^(sohoa_assembly_\w+) (\S+)$", text, re.M)}


def _assembled(stack, topic: str) -> dict[str, list[FileAssembled]]:
    by: dict[str, list[FileAssembled]] = defaultdict(list)
    for e in read_all(stack, topic):
        if isinstance(e, FileAssembled):
            by[e.file_code].append(e)
    return by


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_the_idle_check_reads_only_the_open_files(stack, tmp_path: Path, store: str) -> None:
    env = streams_env(stack, tmp_path, SOHOA_STREAMS__STORE=store,
                      SOHOA_STREAMS__IDLE_CHECK_INTERVAL_S="1")
    site_topic, file_topic = env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"]
    port = env["SOHOA_STREAMS__WEB_PORT"]
    done = [f"HS-{i:03d}" for i in range(150)]
    still_open = ["HS-OPEN-1", "HS-OPEN-2", "HS-OPEN-3"]
    events: list = []
    for code in done:
        events += [*(fake_page(SITE, code, n) for n in range(1, 4)), closed(SITE, code)]
    for code in still_open:
        events += [fake_page(SITE, code, n) for n in range(1, 3)]

    worker = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "worker.log")
    try:
        send(stack, site_topic, events)
        wait_for(lambda: set(done) <= set(_assembled(stack, file_topic)), 240,
                 "every closed file assembled", (worker,))
        # the open files are in the table once a check has counted them
        first = wait_for(lambda: (lambda m: m if m.get("sohoa_assembly_open_files") == 3
                                  else None)(_metrics(port)), 120,
                         "an idle check that counted the 3 open files", (worker,))
        later = wait_for(lambda: (lambda m: m if m.get("sohoa_assembly_idle_checks_total", 0)
                                  >= first["sohoa_assembly_idle_checks_total"] + 3 else None)(
            _metrics(port)), 120, "three more idle checks", (worker,))
    finally:
        assert worker.stop() == 0
    checks = later["sohoa_assembly_idle_checks_total"] - first["sohoa_assembly_idle_checks_total"]
    read = (later["sohoa_assembly_idle_values_read_total"]
            - first["sohoa_assembly_idle_values_read_total"])
    print(f"{store}: {read:.0f} table values read by {checks:.0f} idle checks, "
          f"{len(done)} files assembled and {len(still_open)} open")
    assert set(_assembled(stack, file_topic)).isdisjoint(still_open)
    assert later["sohoa_assembly_open_files"] == len(still_open)
    # each check read the open files' values, none of the 150 assembled ones
    assert read == checks * len(still_open), (read, checks)


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_an_open_file_times_out_after_kill9_restart_and_after_a_move(
        stack, tmp_path: Path, store: str) -> None:
    # The timeout is long enough that no worker times a file out before the test stops it,
    # short enough for a test: each file must be timed out by the worker started after. (The
    # memory store rebuilds the table from the changelog at every start, disk or not.)
    env = streams_env(stack, tmp_path, SOHOA_STREAMS__STORE=store,
                      SOHOA_STREAMS__IDLE_TIMEOUT_S="20",
                      SOHOA_STREAMS__IDLE_CHECK_INTERVAL_S="1",
                      SOHOA_STREAMS__DATA_DIR=str(tmp_path / "disk-1"))
    site_topic, file_topic = env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"]
    port = env["SOHOA_STREAMS__WEB_PORT"]
    done = [f"HS-{i:03d}" for i in range(40)]
    events: list = []
    for code in done:
        events += [fake_page(SITE, code, 1), closed(SITE, code)]
    events += [fake_page(SITE, "HS-P", n) for n in range(1, 4)]   # open at the kill -9

    def open_files(n: int) -> dict[str, float] | None:
        m = _metrics(port)
        return m if m.get("sohoa_assembly_open_files") == n else None

    a = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "a.log")
    try:
        send(stack, site_topic, events)
        wait_for(lambda: set(done) <= set(_assembled(stack, file_topic)), 240,
                 "every closed file assembled", (a,))
        wait_for(lambda: open_files(1), 60, "HS-P open in A's table", (a,))
    finally:
        a.kill9()
    assert a.proc.returncode == -signal.SIGKILL
    assert "HS-P" not in _assembled(stack, file_topic)

    b = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "b.log")  # same disk
    try:
        by = wait_for(lambda: (lambda d: d if "HS-P" in d else None)(
            _assembled(stack, file_topic)), 180, "HS-P timed out by the restarted worker", (b,))
        send(stack, site_topic, [fake_page(SITE, "HS-Q", n) for n in range(1, 6)])
        wait_for(lambda: open_files(1), 60, "HS-Q open in B's table", (b,))
        assert "HS-Q" not in _assembled(stack, file_topic)
    finally:
        assert b.stop() == 0

    moved = {**env, "SOHOA_STREAMS__DATA_DIR": str(tmp_path / "disk-2"),
             "SOHOA_STREAMS__WEB_PORT": str(free_port())}
    c = SohoaProcess(["streams", "--role", "assembly"], moved, tmp_path / "c.log")
    try:
        by = wait_for(lambda: (lambda d: d if "HS-Q" in d else None)(
            _assembled(stack, file_topic)), 180, "HS-Q timed out by the worker on an empty disk",
            (c,))
    finally:
        assert c.stop() == 0
    for code, pages in (("HS-P", 3), ("HS-Q", 5)):
        assert [(e.trigger, e.revision, len(e.pages)) for e in by[code]] == [("idle", 1, pages)]
    assert set(by) == {*done, "HS-P", "HS-Q"}


def _strip_index(data_dir: Path) -> int:
    """Remove the open index and its marker from every partition's database, as a disk
    written before the index has them (the worker is stopped: no lock). Returns the keys
    removed."""
    import rocksdict

    removed = 0
    for db_path in sorted(data_dir.rglob("files-*.db")):
        db = rocksdict.Rdict(str(db_path), options=rocksdict.Options(raw_mode=True))
        try:
            for k in [k for k in db.keys(from_key=b"\x00")
                      if isinstance(k, bytes) and k.startswith(b"\x00")]:
                del db[k]
                removed += 1
        finally:
            db.close()
    return removed


def test_a_disk_from_before_the_index_is_indexed_once(stack, tmp_path: Path) -> None:
    env = streams_env(stack, tmp_path, SOHOA_STREAMS__STORE="rocksdb",
                      SOHOA_STREAMS__IDLE_TIMEOUT_S="20",
                      SOHOA_STREAMS__IDLE_CHECK_INTERVAL_S="1")
    site_topic, file_topic = env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"]
    port = env["SOHOA_STREAMS__WEB_PORT"]
    done = [f"HS-{i:03d}" for i in range(30)]
    events: list = []
    for code in done:
        events += [fake_page(SITE, code, 1), closed(SITE, code)]
    events += [fake_page(SITE, "HS-CU", n) for n in range(1, 3)]

    a = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "a.log")
    try:
        send(stack, site_topic, events)
        wait_for(lambda: set(done) <= set(_assembled(stack, file_topic)), 240,
                 "every closed file assembled", (a,))
        wait_for(lambda: _metrics(port).get("sohoa_assembly_open_files") == 1, 60,
                 "HS-CU open in A's table", (a,))
    finally:
        assert a.stop() == 0
    data_dir = tmp_path / "faust" / env["SOHOA_STREAMS__APP_ID"]
    assert _strip_index(data_dir) >= 2   # HS-CU's entry and at least its partition's marker

    b = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "b.log")
    try:
        by = wait_for(lambda: (lambda d: d if "HS-CU" in d else None)(
            _assembled(stack, file_topic)), 180, "HS-CU timed out on the old disk", (b,))
        m = wait_for(lambda: (lambda m: m if m.get("sohoa_assembly_idle_checks_total", 0) >= 3
                              else None)(_metrics(port)), 60, "three idle checks", (b,))
    finally:
        assert b.stop() == 0
    assert [(e.trigger, len(e.pages)) for e in by["HS-CU"]] == [("idle", 2)]
    # the first check read every value once (31 files and the offsets), later ones the index
    assert m["sohoa_assembly_idle_values_read_total"] < 31 + 12 + 2 * m[
        "sohoa_assembly_idle_checks_total"], m
