"""Fault injection on the whole spine with real parts (`pytest -m faults`, `make test-faults`).

A real site agent watches a hot folder that a separate writer process fills with tiny valid PNG
pages (closing each file with its DONE marker); a real Faust assembly worker, a real QC/verdict
worker and the real consumer carry them into PostgreSQL. During the run one part is hurt —
kill -9 of the agent, a Faust worker, the consumer, the Kafka broker or PostgreSQL, the broker
frozen (SIGSTOP, a network partition), the outbox's disk full — and brought back after a pause.
Then: `sohoa reconcile` agrees with the disk, `sohoa status --json` counts every page once, and
every file has exactly one verdict (on Kafka and in PostgreSQL).

Size: ``SOHOA_FAULT_PAGES`` pages per run (default 300, so the suite stays near ten minutes on
two cores). Issue 7 asks for 10,000: ``SOHOA_FAULT_PAGES=10000 make test-faults``.

Components that exit during a fault are restarted, as the deployment's systemd units do
(Restart=always); each restart is printed and written to the run's log, so a crash is visible.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from infra.stack import run_env
from sohoa.events import FileVerdict
from tests.procs import SohoaProcess, run_sohoa, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PAGES = int(os.environ.get("SOHOA_FAULT_PAGES", "300"))
PER_FILE = 25
PAUSE_S = float(os.environ.get("SOHOA_FAULT_PAUSE_S", "5"))

# The scanner station: pages written under a temp name then renamed; a file's DONE marker only
# once its last page has been on disk for a while (as an operator closes a finished file).
WRITER = r"""
import os, sys, time
from pathlib import Path
from sohoa.samples import tiny_png
root, start, count, per_file, delay = sys.argv[1], *map(float, sys.argv[2:6])
start, count, per_file = int(start), int(count), int(per_file)
folder = lambda k: Path(root, "UBND", f"HS-{k:05d}")
for i in range(start, start + count):
    k = i // per_file
    folder(k).mkdir(parents=True, exist_ok=True)
    tmp = tiny_png(folder(k) / f".{i}.tmp", seed=i + 1)
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
        outbox = (outbox_dir or tmp_path / "outbox") / "outbox.sqlite3"
        outbox.parent.mkdir(parents=True, exist_ok=True)
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
            "SOHOA_WATCHER__OUTBOX_PATH": str(outbox),
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
        self.restarts: list[str] = []
        self.journal = tmp_path / "faults.log"
        self.writer: subprocess.Popen | None = None
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

    def kill9(self, name: str) -> None:
        self.note(f"kill -9 {name}")
        self.procs[name].kill9()

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

    def stop_all(self) -> None:
        if self.writer is not None and self.writer.poll() is None:
            self.writer.kill()
        for p in reversed(list(self.procs.values())):
            p.stop()

    # --- load ---------------------------------------------------------------------------
    def write_pages(self, count: int = PAGES, delay: float = 0.02) -> None:
        self.writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(self.root), "0", str(count), str(PER_FILE),
             str(delay)])

    def files_expected(self, count: int = PAGES) -> set[str]:
        return {f"HS-{i // PER_FILE:05d}" for i in range(count)}

    # --- observations -------------------------------------------------------------------
    def sql(self, query: str, *args) -> list[tuple]:
        try:
            with psycopg.connect(self.env["SOHOA_POSTGRES__DSN"], connect_timeout=3) as c:
                return c.execute(query, args).fetchall()
        except psycopg.Error:
            return []

    def pg_pages(self) -> int:
        rows = self.sql("SELECT count(*) FROM pages WHERE site_id = %s AND NOT removed",
                        self.site)
        return rows[0][0] if rows else -1

    def pg_verdict_files(self) -> int:
        rows = self.sql("SELECT count(DISTINCT file_code) FROM verdicts WHERE site_id = %s",
                        self.site)
        return rows[0][0] if rows else -1

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

    # --- the checks that end every run --------------------------------------------------
    def wait_settled(self, pages: int = PAGES, timeout: float = 420) -> None:
        if self.writer is not None:
            assert self.writer.wait(timeout=timeout) == 0
        files = len(self.files_expected(pages))
        self.wait_until(lambda: self.pg_pages() >= pages, timeout, f"{pages} pages in PostgreSQL")
        self.wait_until(lambda: self.pg_verdict_files() >= files, timeout,
                        f"a verdict for each of {files} files in PostgreSQL")
        time.sleep(3)  # a late duplicate, if any, would land now

    def assert_exact(self, pages: int = PAGES) -> None:
        want_files = self.files_expected(pages)
        rec = run_sohoa(["reconcile", "--site", self.site, "--root", str(self.root), "--json"],
                        self.env)
        assert rec.returncode == 0, f"reconcile disagrees with the disk:\n{rec.stdout[:3000]}"
        st = self.status()
        site = [s for s in st["sites"] if s["site_id"] == self.site]
        assert site and site[0]["pages"] == pages, (site, pages)
        assert {f["file_code"] for f in st["files"] if f["site_id"] == self.site} == want_files
        per_file = self.sql("SELECT file_code, count(*) FROM pages WHERE site_id = %s "
                            "GROUP BY file_code", self.site)
        assert sum(n for _, n in per_file) == pages
        # Exactly one verdict per file: on Kafka (distinct event ids) and in PostgreSQL.
        verdicts = [e for e in read_events(self.stack, self.env["SOHOA_TOPICS__FILE_EVENTS"],
                                           {"FileVerdict"})
                    if isinstance(e, FileVerdict) and e.site_id == self.site]
        by_file: dict[str, set[str]] = collections.defaultdict(set)
        for v in verdicts:
            by_file[v.file_code].add(v.event_id)
        assert set(by_file) == want_files
        twice = {f: ids for f, ids in by_file.items() if len(ids) != 1}
        assert not twice, f"files with more than one verdict on Kafka: {twice}"
        rows = dict(self.sql("SELECT file_code, count(*) FROM verdicts WHERE site_id = %s "
                             "GROUP BY file_code", self.site))
        assert rows == dict.fromkeys(want_files, 1), rows
        dead = self.sql("SELECT count(*) FROM dead_letters")
        assert dead and dead[0][0] == 0, "events went to dead letters"
        self.note(f"settled: {pages} pages, {len(want_files)} files, one verdict each; "
                  f"restarts={self.restarts}")


def _spine_fault(stack, tmp_path: Path, site: str, hurt: Callable[[Spine], None],
                 at_fraction: float = 0.3, delay: float | None = None,
                 settle_timeout: float = 420, **extra: str) -> Spine:
    """Start everything, start the writer, hurt the spine once a share of pages is counted,
    wait for it all to settle and check the exact outcome."""
    spine = Spine(stack, tmp_path, site, **extra)
    spine.start()
    try:
        # Pages spread over >= 20 s: a burst could be counted in one consumer batch, so the
        # fault would land after the run instead of during it.
        spine.write_pages(delay=max(0.02, 20 / PAGES) if delay is None else delay)
        threshold = max(1, int(PAGES * at_fraction))
        wait_for(lambda: spine.pg_pages() >= threshold, 240,
                 f"{threshold} pages counted before the fault", spine.alive_procs())
        assert spine.pg_pages() < PAGES, "the run was over before the fault; it proves nothing"
        hurt(spine)
        spine.wait_settled(timeout=settle_timeout)
        spine.assert_exact()
        return spine
    finally:
        spine.stop_all()
        # The session stack is shared: whatever happened, leave Kafka and PostgreSQL running.
        stack.resume_kafka()
        if not stack.local.kafka.running():
            stack.start_kafka()
        if not stack.local.pg.running():
            stack.start_postgres()


def _kill_and_restart(name: str) -> Callable[[Spine], None]:
    def hurt(spine: Spine) -> None:
        spine.kill9(name)
        time.sleep(PAUSE_S)
        spine.note(f"restart {name}")
        spine.start(name)
    return hurt


@pytest.mark.parametrize("component", ["watch", "assembly", "ocr", "consume"])
def test_kill9_component_mid_run(stack, tmp_path: Path, component: str) -> None:
    _spine_fault(stack, tmp_path, f"xa-kill-{component}", _kill_and_restart(component))


def test_kill9_kafka_broker_mid_run(stack, tmp_path: Path) -> None:
    def hurt(spine: Spine) -> None:
        spine.note("kill -9 kafka")
        stack.kill_kafka()
        try:
            time.sleep(PAUSE_S)
        finally:
            spine.note("start kafka")
            stack.start_kafka()
    # 420 s to settle, not less: the QC/verdict worker may sit ~5 min without file-events
    # metadata after the broker's restart (reported bug, see docs/scaling.md).
    _spine_fault(stack, tmp_path, "xa-kill-kafka", hurt, settle_timeout=420)


def test_postgres_down_mid_run(stack, tmp_path: Path) -> None:
    def hurt(spine: Spine) -> None:
        spine.note("stop postgres (immediate)")
        stack.stop_postgres()
        try:
            time.sleep(PAUSE_S)
        finally:
            spine.note("start postgres")
            stack.start_postgres()
    _spine_fault(stack, tmp_path, "xa-pg-down", hurt)


def test_broker_partition_sigstop(stack, tmp_path: Path) -> None:
    def hurt(spine: Spine) -> None:
        spine.note("SIGSTOP kafka (partition)")
        stack.pause_kafka()
        try:
            time.sleep(max(PAUSE_S, 20))  # longer than client request timeouts
        finally:
            spine.note("SIGCONT kafka")
            stack.resume_kafka()
    _spine_fault(stack, tmp_path, "xa-partition", hurt)


def test_outbox_disk_full(stack, tmp_path: Path) -> None:
    """The outbox's file system fills up mid-run; once space is freed nothing is lost."""
    mnt = tmp_path / "outbox-fs"
    mnt.mkdir()
    # 16 MiB, not 2: the SQLite outbox and its WAL pass 2 MiB within a few hundred pages, so a
    # 2 MiB disk is full before the fault; the ballast file below fills the rest on cue.
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the outbox here: {mounted.stderr.strip()}")
    ballast = mnt / "ballast"
    try:
        def hurt(spine: Spine) -> None:
            try:
                with ballast.open("wb") as fh:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
            except OSError:
                pass  # ENOSPC: the file system is full, which is the point
            spine.note(f"outbox disk full ({shutil.disk_usage(mnt).free} bytes free)")
            before = spine.pg_pages()
            time.sleep(max(PAUSE_S, 8))
            written = len(list(spine.root.rglob("*.png")))
            spine.note(f"agent alive while full: {spine.procs['watch'].alive()}; "
                       f"pages counted {before} -> {spine.pg_pages()}, {written} on disk")
            assert written > spine.pg_pages(), "no page arrived while the disk was full"
            ballast.unlink()
            spine.note("ballast removed")
        # Slow scanning, so most pages arrive while the outbox's disk is full.
        _spine_fault(stack, tmp_path, "xa-disk-full", hurt, at_fraction=0.15,
                     delay=max(0.02, 40 / PAGES), outbox_dir=mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_site_clock_skew_counts_once(stack, tmp_path: Path) -> None:
    """A site whose clock is years off (events far in the future or the past): every page is
    counted once, every file still gets one verdict, nothing goes to dead letters."""
    from datetime import UTC, datetime, timedelta

    from tests.streams_helpers import closed, page_event, send

    spine = Spine(stack, tmp_path, "xa-lech-gio")
    spine.start("consume", "assembly", "ocr")
    try:
        now = datetime.now(UTC)
        skews = {"HS-00000": timedelta(days=3650), "HS-00001": -timedelta(days=3650),
                 "HS-00002": timedelta(hours=9)}
        events = []
        for k, (code, skew) in enumerate(skews.items()):
            for n in range(1, PER_FILE + 1):
                f = spine.root / "UBND" / code / f"{n:04d}.png"
                from sohoa.samples import tiny_png
                tiny_png(f, seed=k * 1000 + n)
                ev = page_event(spine.site, code, n, f)
                events.append(ev.model_copy(update={"occurred_at": now + skew}))
            events.append(closed(spine.site, code).model_copy(
                update={"occurred_at": now + skew}))
        send(stack, spine.env["SOHOA_TOPICS__SITE_EVENTS"], events)
        send(stack, spine.env["SOHOA_TOPICS__SITE_EVENTS"], events[:10])  # a re-send too
        pages = PER_FILE * len(skews)
        spine.wait_settled(pages=pages, timeout=240)
        spine.assert_exact(pages=pages)
    finally:
        spine.stop_all()
