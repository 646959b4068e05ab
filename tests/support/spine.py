"""One isolated run of the whole spine for the fault tests (tests/faults/), with real parts: a
writer process fills a hot folder, the real agent, Faust workers and consumer carry the pages
into PostgreSQL.

Besides starting and stopping the parts it gives the tests what proves a fault happened and was
felt (a process group gone, a peer unreachable for the whole outage, log lines of the clients
that met it) and the final checks, every one against the independent count: the pages the
writer put on disk.

Components that exit by themselves are restarted, as the deployment's systemd units do
(Restart=always), so the run can finish and show what was lost; but each such restart is
recorded and fails the test (:meth:`Spine.assert_restarts`): only the component a test hurt
may be started again, and only by the test.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from infra.stack import run_env
from sohoa.events import FileAssembled, FileVerdict, OcrCompleted
from tests.support.procs import SohoaProcess, run_sohoa, wait_for

PAGES = int(os.environ.get("SOHOA_FAULT_PAGES", "300"))
PER_FILE = 25

# The scanner station: pages written under a temp name then renamed; a file's DONE marker only
# once its last page has been on disk for a while (as an operator closes a finished file).
# kind "tiny": 8x8 PNGs (QC rejects them: volume without pixels); "text": small A5 pages of
# Vietnamese text that pass QC, so the OCR worker really runs.
WRITER = r"""
import os, sys, time
from pathlib import Path
from sohoa.samples import SAMPLE_LINES, PageSpec, tiny_png, write_page
root, start, count, per_file, delay, kind = sys.argv[1:7]
hold = Path(sys.argv[7]) if len(sys.argv) > 7 else None  # halfway, wait while it exists
start, count, per_file, delay = int(start), int(count), int(per_file), float(delay)
folder = lambda k: Path(root, "UBND", f"HS-{k:05d}")
def page(path, i):
    if kind == "tiny":
        return tiny_png(path, seed=i + 1)
    lines = SAMPLE_LINES[i % len(SAMPLE_LINES):] + SAMPLE_LINES[:i % len(SAMPLE_LINES)]
    own = f"Hồ sơ {path.parent.name}, trang {i % per_file + 1}"  # no two pages alike
    return write_page(path, PageSpec(size_mm=(148.0, 210.0), text=(*lines[:4], own), seed=i))
for i in range(start, start + count):
    if hold is not None and i == start + count // 2:
        deadline = time.monotonic() + 600
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    k = i // per_file
    folder(k).mkdir(parents=True, exist_ok=True)
    tmp = page(folder(k) / f".{i}.tmp.png", i)
    os.replace(tmp, folder(k) / f"{i % per_file + 1:04d}.png")
    if i % per_file == per_file - 1 and k >= 1:
        (folder(k - 1) / "DONE").touch()   # the previous file: its pages are long stable
    if delay:
        time.sleep(delay)
time.sleep(3)
for k in range(start // per_file, (start + count - 1) // per_file + 1):
    (folder(k) / "DONE").touch()
"""


def read_events(stack, topic: str, names: set[str], timeout_ms: int = 3000) -> list:
    """Every event of the given types on ``topic``; other types are not parsed, so a change
    to an unrelated event type cannot break these checks."""
    from sohoa.events import parse_event
    from sohoa.kafka_clients import make_consumer

    consumer = make_consumer(stack.settings.kafka, topic, group_id=None,
                             consumer_timeout_ms=timeout_ms)
    try:
        out = []
        for m in consumer:
            if json.loads(m.value).get("schema", {}).get("name") in names:
                out.append(parse_event(m.value))
        return out
    finally:
        consumer.close()


def group_members(pgid: int) -> list[int]:
    """Live processes of the process group ``pgid`` (Linux /proc; zombies are dead)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def log_records(paths: list[Path], since: datetime, until: datetime | None = None,
                pred: Callable[[dict], bool] = lambda r: True) -> list[dict]:
    """The JSON log records in ``paths`` stamped within [since, until] that ``pred`` accepts."""
    out = []
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                rec = json.loads(line)
                ts = datetime.fromisoformat(rec["ts"])
            except (ValueError, KeyError, TypeError):
                continue
            if ts >= since and (until is None or ts <= until) and pred(rec):
                out.append(rec)
    return out


class Spine:
    """One isolated run of the spine: own topics, database, app ids, hot folder, logs."""

    def __init__(self, stack, tmp_path: Path, site: str, *, ocr: bool = False,
                 outbox_dir: Path | None = None, **extra: str) -> None:
        self.stack = stack
        self.tmp = tmp_path
        self.site = site
        self.root = tmp_path / "hot"
        self.root.mkdir(parents=True, exist_ok=True)
        topics = stack.new_topics()
        self.outbox = (outbox_dir or tmp_path / "outbox") / "outbox.sqlite3"
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        self.env = {
            **stack.env,
            **run_env("faults", tmp_path, ocr=ocr),
            "SOHOA_LOGGING__JSON": "true",
            "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
            "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
            "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
            "SOHOA_POSTGRES__DSN": stack.new_database("faults"),
            "SOHOA_WATCHER__SITE_ID": site,
            "SOHOA_WATCHER__ROOTS": json.dumps([str(self.root)]),
            "SOHOA_WATCHER__OUTBOX_PATH": str(self.outbox),
            "SOHOA_WATCHER__STABILITY_WINDOW_S": "0.5",
            "SOHOA_WATCHER__POLL_INTERVAL_S": "0.5",
            "SOHOA_WATCHER__HEARTBEAT_INTERVAL_S": "5",
            "SOHOA_WATCHER__RECONCILE_INTERVAL_S": "30",
            "SOHOA_STREAMS__COMMIT_INTERVAL_S": "0.5",
            "SOHOA_QC__WORKERS": "1",
            **extra,
        }
        self.commands = {"consume": ["consume"],
                         "assembly": ["streams", "--role", "assembly"],
                         "ocr": ["streams", "--role", "ocr"],
                         "watch": ["watch"]}
        self.procs: dict[str, SohoaProcess] = {}
        self.env_for: dict[str, dict[str, str]] = {}   # per-component overrides (ports…)
        self.starts: collections.Counter[str] = collections.Counter()
        self.restarts: list[str] = []       # by supervise(): a component exited by itself
        self.planned: collections.Counter[str] = collections.Counter()  # by the test
        self.journal = tmp_path / "faults.log"
        self.writer: subprocess.Popen | None = None
        self.progress_after_fault: int | None = None  # see outage()
        migrated = run_sohoa(["db", "migrate"], self.env)
        assert migrated.returncode == 0, migrated.stderr

    # --- processes ----------------------------------------------------------------------
    def note(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        print(line)
        with self.journal.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def start(self, *names: str) -> None:
        for name in names or tuple(self.commands):
            self.starts[name] += 1
            self.procs[name] = SohoaProcess(
                self.commands[name], {**self.env, **self.env_for.get(name, {})},
                self.tmp / "logs" / f"{name}.{self.starts[name]}.log")

    def restart(self, name: str) -> None:
        """Start ``name`` again after the test stopped or killed it (a planned restart)."""
        assert not self.procs[name].alive(), f"{name} is still running"
        self.note(f"restart {name}")
        self.planned[name] += 1
        self.procs[name].stop()
        self.start(name)

    def kill9(self, name: str) -> int:
        """kill -9 of the component's whole process group; returns the killed pid once no
        process of the group is left."""
        p = self.procs[name]
        assert p.alive(), f"{name} was not running when the test meant to kill it"
        pid = p.proc.pid
        self.note(f"kill -9 {name} (pid {pid})")
        p.kill9()
        assert p.proc.returncode == -9, (name, p.proc.returncode)
        wait_for(lambda: not group_members(pid), 10, f"every process of {name} gone")
        return pid

    def supervise(self) -> None:
        """What systemd's Restart=always does: bring back a component that exited."""
        for name, p in list(self.procs.items()):
            if not p.alive():
                self.restarts.append(name)
                self.note(f"{name} exited with {p.proc.returncode}; restarted "
                          f"(last log lines:\n{p.tail(8)})")
                p.stop()
                self.start(name)

    def alive_procs(self) -> tuple[SohoaProcess, ...]:
        return tuple(self.procs.values())

    def assert_restarts(self) -> None:
        """No component exited by itself, each is running, and each was started once plus
        the test's own restarts of what it hurt."""
        assert not self.restarts, (
            f"components exited by themselves and were restarted: {self.restarts}; see "
            f"{self.journal}")
        dead = [n for n, p in self.procs.items() if not p.alive()]
        assert not dead, f"components not running at the end: {dead}"
        want = {n: 1 + self.planned[n] for n in self.procs}
        assert dict(self.starts) == want, (dict(self.starts), want)

    def stop_all(self) -> None:
        if self.writer is not None and self.writer.poll() is None:
            self.writer.kill()
        for p in reversed(list(self.procs.values())):
            p.stop()

    def logs(self, name: str) -> list[Path]:
        """Every log file of ``name`` (one per start)."""
        return sorted((self.tmp / "logs").glob(f"{name}.*.log"))

    # --- load ---------------------------------------------------------------------------
    def write_pages(self, count: int = PAGES, delay: float = 0.02, per_file: int = PER_FILE,
                    kind: str = "tiny", hold: Path | None = None) -> None:
        """The writer, in the background; with ``hold``, it stops halfway while that file
        exists, so a fault still finds work left however slowly the spine started."""
        self.writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(self.root), "0", str(count), str(per_file),
             str(delay), kind, *([str(hold)] if hold is not None else [])])

    # --- the independent count: what is on disk ---------------------------------------------
    def disk_pages(self) -> dict[str, int]:
        """Pages the writer has put on disk, per file code (temp names excluded)."""
        out: collections.Counter[str] = collections.Counter()
        for p in self.root.glob("*/*/*.png"):
            if not p.name.startswith("."):
                out[p.parent.name] += 1
        return dict(out)

    def closed_on_disk(self) -> int:
        return len(list(self.root.glob("*/*/DONE")))

    # --- observations -------------------------------------------------------------------
    def sql(self, query: str, *args) -> list[tuple]:
        try:
            with psycopg.connect(self.env["SOHOA_POSTGRES__DSN"], connect_timeout=3) as c:
                return c.execute(query, args).fetchall()
        except psycopg.Error:
            return []

    def pg_up(self) -> bool:
        try:
            with psycopg.connect(self.env["SOHOA_POSTGRES__DSN"], connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _count(self, query: str) -> int:
        rows = self.sql(query, self.site)
        return rows[0][0] if rows else -1

    def pg_pages(self) -> int:
        return self._count("SELECT count(*) FROM pages WHERE site_id = %s AND NOT removed")

    def pg_assembled_files(self) -> int:
        return self._count("SELECT count(DISTINCT file_code) FROM file_assemblies "
                           "WHERE site_id = %s")

    def pg_verdict_files(self) -> int:
        return self._count("SELECT count(DISTINCT file_code) FROM verdicts WHERE site_id = %s")

    def outbox_rows(self, where: str = "", *args: object) -> int:
        """PageScanned rows in the agent's outbox, with an extra SQL condition (read-only;
        -1 while it cannot be read)."""
        query = "SELECT count(*) FROM outbox WHERE etype = 'PageScanned'"
        if where:
            query += f" AND ({where})"
        try:
            db = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=5)
            try:
                return db.execute(query, args).fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error:
            return -1

    def end_offsets(self, topic: str) -> int:
        """Records ever written to ``topic`` (sum of its partitions' end offsets)."""
        from kafka import TopicPartition

        from sohoa.kafka_clients import make_consumer

        c = make_consumer(self.stack.settings.kafka, group_id=None)
        try:
            tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
            return sum(c.end_offsets(tps).values())
        finally:
            c.close()

    def status(self) -> dict:
        out = run_sohoa(["status", "--json"], self.env)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def wait_until(self, check: Callable[[], object], timeout: float, what: str) -> object:
        """wait_for, restarting exited components on the way (as systemd would)."""
        deadline = time.monotonic() + timeout
        while True:
            self.supervise()
            left = deadline - time.monotonic()
            try:
                return wait_for(check, min(10.0, max(left, 0.5)), what, interval=0.5)
            except AssertionError:
                if time.monotonic() >= deadline:
                    logs = "\n".join(f"--- {n}\n{p.tail(15)}" for n, p in self.procs.items())
                    raise AssertionError(f"timed out waiting for {what}\n{logs}") from None

    # --- faults -------------------------------------------------------------------------
    def outage(self, seconds: float, down: Callable[[], bool], what: str,
               progress: Callable[[], int] | None = None) -> tuple[datetime, datetime]:
        """Let the fault last ``seconds``, checking every half second that it holds (``down``
        true each time: nothing brought the part back early). With ``progress``, its value at
        the end is kept in :attr:`progress_after_fault`. Returns the outage's (start, end)."""
        started, t0 = datetime.now(UTC), time.monotonic()
        self.note(f"{what}: down for {seconds:.0f} s")
        while True:
            assert down(), f"{what}: back after {time.monotonic() - t0:.1f} s, before its time"
            if time.monotonic() - t0 >= seconds:
                break
            time.sleep(0.5)
        if progress is not None:
            self.progress_after_fault = progress()
        return started, datetime.now(UTC)

    # --- the checks that end every run --------------------------------------------------
    def wait_settled(self, pages: int = PAGES, timeout: float = 420) -> None:
        if self.writer is not None:
            assert self.writer.wait(timeout=timeout) == 0
        files = len(self.disk_pages())
        self.wait_until(lambda: self.pg_pages() >= pages, timeout, f"{pages} pages in PostgreSQL")
        self.wait_until(lambda: self.pg_verdict_files() >= files, timeout,
                        f"a verdict for each of {files} files in PostgreSQL")
        time.sleep(3)  # a late duplicate, if any, would land now

    def assert_exact(self, pages: int = PAGES) -> None:
        """Every figure of the centre against the pages on disk: reconcile, status, the pages
        table, one verdict per file (Kafka and PostgreSQL) whose page total is the file's
        pages on disk, the same for the file's last assembly, and the daily counts."""
        disk = self.disk_pages()
        assert sum(disk.values()) == pages, f"the writer left {disk} on disk, not {pages} pages"
        want_files = set(disk)
        rec = run_sohoa(["reconcile", "--site", self.site, "--root", str(self.root), "--json"],
                        self.env)
        assert rec.returncode == 0, f"reconcile disagrees with the disk:\n{rec.stdout[:3000]}"
        st = self.status()
        site = [s for s in st["sites"] if s["site_id"] == self.site]
        assert site and site[0]["pages"] == pages, (site, pages)
        st_files = {f["file_code"]: f["pages"] for f in st["files"] if f["site_id"] == self.site}
        assert st_files == disk, ("status per file", st_files, disk)
        per_file = dict(self.sql("SELECT file_code, count(*) FROM pages WHERE site_id = %s "
                                 "AND NOT removed GROUP BY file_code", self.site))
        assert per_file == disk, ("pages table per file", per_file, disk)

        # Exactly one verdict per file on Kafka (distinct event ids), for the file's pages.
        events = [e for e in read_events(self.stack, self.env["SOHOA_TOPICS__FILE_EVENTS"],
                                         {"FileVerdict", "FileAssembled"})
                  if e.site_id == self.site]
        by_file: dict[str, set[str]] = collections.defaultdict(set)
        for v in events:
            if isinstance(v, FileVerdict):
                by_file[v.file_code].add(v.event_id)
                assert v.pages_total == disk[v.file_code], ("FileVerdict.pages_total", v)
        assert set(by_file) == want_files
        twice = {f: ids for f, ids in by_file.items() if len(ids) != 1}
        assert not twice, f"files with more than one verdict on Kafka: {twice}"
        last_asm: dict[str, FileAssembled] = {}
        for e in events:
            if isinstance(e, FileAssembled) and (
                    e.file_code not in last_asm or e.revision >= last_asm[e.file_code].revision):
                last_asm[e.file_code] = e
        assert {c: len(e.pages) for c, e in last_asm.items()} == disk, "FileAssembled pages"

        # The same in PostgreSQL: one verdict row per file, of its latest assembly.
        rows = self.sql("SELECT file_code, count(*), min(pages_total), max(pages_total), "
                        "max(revision), max(verdict) FROM verdicts WHERE site_id = %s "
                        "GROUP BY file_code", self.site)
        assert {r[0]: r[1] for r in rows} == dict.fromkeys(want_files, 1), rows
        assert {r[0]: (r[2], r[3]) for r in rows} == {c: (n, n) for c, n in disk.items()}, \
            ("verdicts.pages_total", rows, disk)
        asm = self.sql("SELECT DISTINCT ON (file_code) file_code, pages, revision "
                       "FROM file_assemblies WHERE site_id = %s "
                       "ORDER BY file_code, revision DESC", self.site)
        assert {r[0]: r[1] for r in asm} == disk, ("file_assemblies.pages", asm, disk)
        assert {r[0]: r[2] for r in asm} == {r[0]: r[4] for r in rows}, \
            "a verdict is not of its file's latest assembly"

        # The daily counts: every page once, accepted pages and files as the verdicts say.
        accepted = {r[0] for r in rows if r[5] == "accepted"}
        daily = self.sql("SELECT COALESCE(sum(pages_scanned), 0), COALESCE(sum(pages_accepted), "
                         "0), COALESCE(sum(files_accepted), 0) FROM daily_progress "
                         "WHERE site_id = %s", self.site)
        want_daily = (pages, sum(disk[c] for c in accepted), len(accepted))
        assert daily and tuple(daily[0]) == want_daily, ("daily_progress", daily, want_daily)

        dead = self.sql("SELECT count(*) FROM dead_letters")
        assert dead and dead[0][0] == 0, "events went to dead letters"
        self.note(f"settled: {pages} pages, {len(want_files)} files ({len(accepted)} accepted), "
                  f"one verdict each; restarts={self.restarts}, planned={dict(self.planned)}")

    def assert_ocr_once(self, stamps: dict[Path, tuple[int, int]]) -> None:
        """Each accepted file has exactly one PDF, of its verdict's revision, matching its one
        OcrCompleted; every PDF seen earlier in the run (``stamps``: inode, mtime) is the same
        file now, so none was made twice."""
        out = Path(self.env["SOHOA_OCR__OUTPUT_DIR"]) / self.site
        verdicts = dict(self.sql("SELECT file_code, revision FROM verdicts WHERE site_id = %s "
                                 "AND verdict = 'accepted'", self.site))
        assert verdicts, "no file was accepted: the OCR check would be empty"
        done = [e for e in read_events(self.stack, self.env["SOHOA_TOPICS__FILE_EVENTS"],
                                       {"OcrCompleted"})
                if isinstance(e, OcrCompleted) and e.site_id == self.site]
        pdfs = sorted(out.rglob("*.pdf"))
        assert {(p.parent.name, p.name) for p in pdfs} == {
            (c, f"r{rev}.pdf") for c, rev in verdicts.items()}, ("PDFs", pdfs, verdicts)
        for p in pdfs:
            ids = {e.event_id for e in done if e.file_code == p.parent.name}
            assert len(ids) == 1, (p, ids)
            sha = hashlib.sha256(p.read_bytes()).hexdigest()
            assert {e.output_sha256 for e in done if e.file_code == p.parent.name} == {sha}, p
        rows = self.sql("SELECT file_code, revision, status, output_sha256 FROM ocr_results "
                        "WHERE site_id = %s", self.site)
        assert {(r[0], r[1]) for r in rows} == set(verdicts.items()), rows
        assert all(r[2] == "completed" for r in rows), rows
        for p, stamp in stamps.items():
            st = p.stat()
            assert (st.st_ino, st.st_mtime_ns) == stamp, f"{p} was written again"
