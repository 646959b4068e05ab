"""The agent under abuse, with real processes and the real broker: kill -9 mid-burst, a broker
stopped past each of the agent's Kafka timeouts while pages keep arriving, and 20,000 files at
once past inotify's queue (counted at the centre too, through the real consumer into
PostgreSQL)."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from infra.procs import children, port_open
from infra.stack import run_env
from tests.support.client_timeouts import client_timeouts
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.spine import group_members as _group
from tests.support.watch_helpers import agent_env, hot, of_type, read_topic

pytestmark = pytest.mark.integration

# A separate process writes the pages, as a scanner's software would: temp name, then rename.
WRITER = r"""
import io, os, sys, time
from PIL import Image
root, start, count, per_file, delay = sys.argv[1], *map(float, sys.argv[2:6])
start, count, per_file = int(start), int(count), int(per_file)
for i in range(start, start + count):
    folder = os.path.join(root, "Phong", f"HS-{i // per_file:05d}")
    os.makedirs(folder, exist_ok=True)
    im = Image.new("RGB", (4, 4), (i % 256, (i >> 8) % 256, (i >> 16) % 256))
    buf = io.BytesIO(); im.save(buf, "PNG")
    name = os.path.join(folder, f"{i % per_file + 1:04d}.png")
    tmp = os.path.join(folder, f".{i}.tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, name)
    if delay:
        time.sleep(delay)
"""


def _writer(root: Path, start: int, count: int, per_file: int, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(start), str(count),
                             str(per_file), str(delay)])


def _sent_pages(env: dict[str, str]) -> int:
    try:
        db = sqlite3.connect(f"file:{env['SOHOA_WATCHER__OUTBOX_PATH']}?mode=ro", uri=True,
                             timeout=5)
        try:
            return db.execute("SELECT count(*) FROM outbox WHERE etype = 'PageScanned' "
                              "AND sent IS NOT NULL").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _pages_on_kafka(stack, env: dict[str, str]) -> list:
    return of_type(read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"], 3000), "PageScanned")


def _assert_exactly(pages: list, n: int, *, strict_once: bool) -> None:
    by_page = collections.defaultdict(set)
    for e in pages:
        by_page[(e.file_code, e.document)].add(e.event_id)
    assert len(by_page) == n, f"{len(by_page)} distinct pages on Kafka, expected {n}"
    assert all(len(ids) == 1 for ids in by_page.values()), "a page was sent with two ids"
    assert len({e.event_id for e in pages}) == n
    if strict_once:
        assert len(pages) == n, f"{len(pages) - n} records on Kafka twice"


def test_kill_9_mid_burst_then_restart_loses_nothing(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path, SOHOA_WATCHER__STABILITY_WINDOW_S="0.3",
                    SOHOA_WATCHER__SEND_BATCH="100")
    root = hot(env)
    agent = SohoaProcess(["watch"], env, tmp_path / "watch1.log")
    writer = _writer(root, 0, 2000, 100, 0.002)
    try:
        wait_for(lambda: _sent_pages(env) >= 300, 120, "300 pages sent before the kill",
                 (agent,), interval=0.05)
        agent.kill9()
        assert agent.proc.returncode == -9
        wait_for(lambda: not _group(agent.proc.pid), 10, "the agent and its sender gone")
        killed_at = _sent_pages(env)
        assert killed_at < 2000, "the burst was over before the kill; the test proves nothing"
        assert writer.wait(timeout=120) == 0
        assert len(list(root.glob("Phong/*/*.png"))) == 2000
        agent = SohoaProcess(["watch"], env, tmp_path / "watch2.log")
        wait_for(lambda: _sent_pages(env) >= 2000, 240, "all 2,000 pages sent", (agent,))
        pages = wait_for(lambda: (lambda p: p if len({e.event_id for e in p}) >= 2000 else None)(
            _pages_on_kafka(stack, env)), 60, "2,000 distinct event ids on Kafka")
        # A kill between Kafka's ack and the outbox update may re-send a page: same event_id.
        _assert_exactly(pages, 2000, strict_once=False)
    finally:
        if writer.poll() is None:
            writer.kill()
        assert agent.stop() == 0, agent.tail()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gauge(port: int, name: str) -> float | None:
    """One sample of the agent's /metrics (its sender child reports through the agent)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_broker_down_past_the_agents_timeouts_while_pages_arrive(stack, tmp_path: Path
                                                                  ) -> None:
    """The broker stopped for longer than each of the agent's Kafka timeouts — its delivery
    timeout shortened to 20 s so the wait stays short — while pages keep arriving: records in
    flight are given up and re-sent from the outbox, and every page lands on Kafka once."""
    port = _free_port()
    env = agent_env(stack, tmp_path, SOHOA_WATCHER__STABILITY_WINDOW_S="0.3",
                    SOHOA_WATCHER__METRICS_PORT=str(port), SOHOA_LOGGING__JSON="true",
                    SOHOA_WATCHER__DELIVERY_TIMEOUT_S="20")
    outage_s = client_timeouts(env).agent_cut_off()
    host, kport = stack.kafka_bootstrap.rsplit(":", 1)
    root = hot(env)
    agent = SohoaProcess(["watch"], env, tmp_path / "watch.log")
    writer = None
    try:
        first = _writer(root, 0, 100, 50, 0.0)
        assert first.wait(timeout=60) == 0
        wait_for(lambda: _sent_pages(env) >= 100, 60, "the first 100 pages", (agent,))
        stack.stop_kafka()
        try:
            # Pages keep arriving during the outage: 300 spread over it.
            writer = _writer(root, 100, 300, 50, outage_s / 300)
            down_since = time.monotonic()
            while time.monotonic() - down_since < outage_s:
                assert not port_open(host, int(kport)), "the broker came back early"
                time.sleep(0.5)
            depth = sqlite3.connect(env["SOHOA_WATCHER__OUTBOX_PATH"]).execute(
                "SELECT count(*) FROM outbox WHERE sent IS NULL").fetchone()[0]
            assert depth > 0, "nothing queued while the broker was down"
            assert agent.alive(), agent.tail()
            # The sender counts the queue once a second; the agent serves what it reports.
            wait_for(lambda: (_gauge(port, "sohoa_watcher_outbox_depth") or 0) > 0, 10,
                     "the outbox depth on /metrics", (agent,))
            assert (_gauge(port, "sohoa_watcher_oldest_unsent_seconds") or 0) > 0
            # Felt: the producer gave records up (they stay in the outbox).
            assert _log_events(agent, "kafka delivery failed; events stay in the outbox"), \
                agent.tail()
        finally:
            stack.start_kafka()
        assert writer.wait(timeout=120) == 0
        assert len(list(root.glob("Phong/*/*.png"))) == 400
        wait_for(lambda: _sent_pages(env) >= 400, 300, "all 400 pages after the outage",
                 (agent,))
        pages = _pages_on_kafka(stack, env)
        _assert_exactly(pages, 400, strict_once=True)
        wait_for(lambda: _gauge(port, "sohoa_watcher_outbox_depth") == 0, 10,
                 "an empty outbox on /metrics", (agent,))
        assert _gauge(port, "sohoa_watcher_pages_sent_total") == 400
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        assert agent.stop() == 0, agent.tail()


def _written(root: Path, i: int, per_file: int) -> bool:
    """The writer has put page ``i`` under its final name (it writes them in order)."""
    return (root / "Phong" / f"HS-{i // per_file:05d}" / f"{i % per_file + 1:04d}.png").exists()


def test_20000_files_at_once_overflow_then_all_counted(stack, tmp_path: Path) -> None:
    """20,000 files at once, past inotify's queue: the agent says events were lost and
    reconciles, and every page is on Kafka once and counted once at the centre.

    watchdog drains the kernel's queue from its own thread into an unbounded buffer, so a
    running agent seldom lets the queue fill; the agent is frozen (SIGSTOP) for part of the
    burst so that it does, for certain, without lowering fs.inotify.max_queued_events (a
    machine-wide setting other processes on this machine share). The files' folders exist
    before the agent starts, as a station prepares them: inotify watches only folders it
    has seen, so pages in a folder made while the agent was frozen would queue no event."""
    total, per_file, first = 20_000, 1000, 2000
    queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    # Each page written while the agent is frozen queues four events for it (create and
    # close of the temp name, the rename's two halves): twice the queue's length of them.
    frozen_pages = queue // 2
    if first + frozen_pages > total:
        pytest.skip(f"fs.inotify.max_queued_events={queue}: {total:,} files cannot fill it")
    # The reconcile interval is only the safety net here: the overflow itself triggers one.
    env = agent_env(stack, tmp_path, SOHOA_WATCHER__STABILITY_WINDOW_S="0.5",
                    SOHOA_WATCHER__RECONCILE_INTERVAL_S="600", SOHOA_LOGGING__JSON="true",
                    **run_env("w20k", tmp_path), SOHOA_POSTGRES__DSN=stack.new_database("w20k"))
    migrated = run_sohoa(["db", "migrate"], env)
    assert migrated.returncode == 0, migrated.stderr
    root = hot(env)
    for k in range(total // per_file):
        (root / "Phong" / f"HS-{k:05d}").mkdir(parents=True)
    consumer = SohoaProcess(["consume"], env, tmp_path / "consume.log")
    agent = SohoaProcess(["watch"], env, tmp_path / "watch.log")
    writer = None
    try:
        wait_for(lambda: "watching" in agent.log.read_text(), 60, "the agent watching", (agent,))
        writer = _writer(root, 0, total, per_file, 0.0)
        wait_for(lambda: _written(root, first, per_file), 120, f"{first} pages written",
                 (agent,), interval=0.01)
        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: _written(root, first + frozen_pages, per_file) or
                     writer.poll() is not None, 120, "the burst while the agent is frozen",
                     interval=0.01)
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        assert _written(root, first + frozen_pages, per_file)
        assert writer.wait(timeout=300) == 0
        on_disk = len(list(root.glob("Phong/*/*.png")))
        assert on_disk == total, on_disk
        wait_for(lambda: _log_events(agent, "inotify events were lost; reconciling the roots now"),
                 60, "the agent noticing the overflow", (agent,))
        wait_for(lambda: _sent_pages(env) >= total, 400, "all 20,000 pages sent", (agent,),
                 interval=1.0)
        pages = _pages_on_kafka(stack, env)
        _assert_exactly(pages, total, strict_once=True)
        # At the centre: the consumer counts each page once, 1,000 in each file.
        site = env["SOHOA_WATCHER__SITE_ID"]
        wait_for(lambda: _pg_pages(env, site) >= total, 300, "20,000 pages in PostgreSQL",
                 (consumer,), interval=1.0)
        time.sleep(2)  # a late duplicate would land now
        per = _pg_rows(env, "SELECT file_code, count(*) FROM pages WHERE site_id = %s "
                            "AND NOT removed GROUP BY file_code", site)
        assert per == {f"HS-{k:05d}": per_file for k in range(total // per_file)}, per
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        consumer.stop()
        assert agent.stop() == 0, agent.tail()


def _log_events(proc: SohoaProcess, event: str) -> list[dict]:
    out = []
    for line in proc.log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == event:
            out.append(rec)
    return out


def _pg_rows(env: dict[str, str], query: str, *args: object) -> dict:
    with psycopg.connect(env["SOHOA_POSTGRES__DSN"], connect_timeout=5) as c:
        return dict(c.execute(query, args).fetchall())


def _pg_pages(env: dict[str, str], site: str) -> int:
    try:
        rows = _pg_rows(env, "SELECT site_id, count(*) FROM pages WHERE site_id = %s "
                             "AND NOT removed GROUP BY site_id", site)
    except psycopg.Error:
        return 0
    return rows.get(site, 0)


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _sender_child(agent: SohoaProcess) -> int:
    def sender() -> list[int]:
        # The sender is `python -m producers.sender`; nothing else may be a child of ours.
        kids = children(agent.proc.pid)
        return [k for k in kids if b"producers.sender" in Path(f"/proc/{k}/cmdline").read_bytes()]

    kids = wait_for(sender, 60, "the sender child process", (agent,))
    assert len(kids) == 1, kids
    assert children(agent.proc.pid) == kids  # no resource tracker or other helper process
    return kids[0]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sender_child_exits_by_itself_when_the_agent_is_killed(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path)
    agent = SohoaProcess(["watch"], env, tmp_path / "watch.log")
    try:
        child = _sender_child(agent)
        assert _running(child)
        os.kill(agent.proc.pid, signal.SIGKILL)  # the agent alone, not its process group
        agent.proc.wait(timeout=30)
        # An orphan sender beside a restarted agent would send the same rows twice.
        wait_for(lambda: not _running(child), 30, "the orphaned sender to exit")
    finally:
        agent.stop()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_agent_exits_nonzero_when_its_sender_dies_and_a_restart_sends_all(
        stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path, SOHOA_WATCHER__STABILITY_WINDOW_S="0.3")
    root = hot(env)
    agent = SohoaProcess(["watch"], env, tmp_path / "watch1.log")
    try:
        child = _sender_child(agent)
        os.kill(child, signal.SIGKILL)
        # Exit 1: the supervisor (systemd Restart=always) starts a fresh agent and sender.
        assert agent.proc.wait(timeout=60) == 1, agent.tail()
    finally:
        agent.stop()
    writer = _writer(root, 0, 50, 50, 0.0)  # arrived while no agent ran
    assert writer.wait(timeout=60) == 0
    agent = SohoaProcess(["watch"], env, tmp_path / "watch2.log")
    try:
        wait_for(lambda: _sent_pages(env) >= 50, 120, "the 50 pages after the restart",
                 (agent,))
        _assert_exactly(_pages_on_kafka(stack, env), 50, strict_once=True)
    finally:
        assert agent.stop() == 0, agent.tail()
