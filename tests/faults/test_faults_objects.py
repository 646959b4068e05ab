"""Faults on the way to the object store, with real parts (`pytest -m faults`): the real agent
uploading to SeaweedFS, real Kafka, the real consumer and PostgreSQL.

- kill -9 of the agent in the middle of a 200 MB multi-page PDF: the next run keeps the parts
  the store acknowledged, sends the rest, and each page counts once;
- the object server stopped for 60 s while pages keep arriving: all arrive, none twice;
- a 1 MB/s cap: documents are stored at that rate, and the backlog shows on `sohoa status`;
- the object server's disk full (a small tmpfs): nothing lost, a clear error, and every page
  arrives once space returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from sohoa.objectstore import ObjectStore, page_key, page_uri
from sohoa.samples import PageSpec, incompressible_pdf, write_page
from tests.support.objects_helpers import OBJECT_SITES, SITE, objects_env, site_row, status
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.watch_helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MIB = 1024 * 1024


def _scanned(env: dict[str, str]) -> int:
    return site_row(env).get("pages", 0)


def _outbox(env: dict[str, str], sql: str) -> list[tuple]:
    db = sqlite3.connect(env["SOHOA_WATCHER__OUTBOX_PATH"], timeout=30)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def _page_events(stack, env: dict[str, str]) -> list:
    return [e for e in read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"], 3000)
            if e.NAME == "PageScanned"]


def test_kill9_mid_upload_of_200mb_pdf_resumes_and_counts_once(stack, objects,
                                                               tmp_path: Path) -> None:
    env = objects_env(stack, objects, tmp_path,
                      SOHOA_UPLOAD__PART_SIZE_BYTES=str(8 * MIB),
                      SOHOA_WATCHER__MAX_FILE_BYTES=str(400 * MIB))
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    root = Path(json.loads(env["SOHOA_WATCHER__ROOTS"])[0])
    pdf = incompressible_pdf(root / "FONDS-A" / "HS-01" / "QD-200MB.pdf", 20, 10 * MIB)
    assert pdf.stat().st_size > 200 * 1000 * 1000  # 210 MB
    logs = tmp_path / "logs"
    consume = SohoaProcess(["consume"], env, logs / "consume.log")
    # Slowed to ~40 MB/s so the cut lands in the middle of the upload.
    agent = SohoaProcess(["watch"], {**env, "SOHOA_UPLOAD__MAX_BYTES_PER_S": str(40 * MIB)},
                         logs / "watch-1.log")
    try:
        parts = wait_for(lambda: (n := _outbox(env, "SELECT count(*) FROM upload_parts")
                                  ) and n[0][0] >= 4 and n[0][0], 300,
                         "a few parts stored", (agent, consume), interval=0.2)
        agent.kill9()
        left = _outbox(env, "SELECT state, upload_id FROM uploads")
        assert left[0][0] == "pending" and left[0][1], left
        assert _scanned(env) == 0  # no event went before its document was stored
        agent = SohoaProcess(["watch"], env, logs / "watch-2.log")
        wait_for(lambda: _scanned(env) == 20, 300, "the 20 pages counted", (agent, consume))
        time.sleep(3)  # anything counted twice would show now
        assert _scanned(env) == 20
    finally:
        agent.stop()
        consume.stop()
    resumed = [json.loads(line) for line in (logs / "watch-2.log").read_text().splitlines()
               if "resuming upload" in line]
    assert resumed and resumed[0]["parts_kept"] >= parts, resumed
    evs = _page_events(stack, env)
    assert sorted(e.page_index for e in evs) == list(range(1, 21))
    assert len({e.event_id for e in evs}) == 20
    sha = evs[0].document_sha256
    # The object is the document, byte for byte: the workers' read proves its SHA-256.
    from sohoa.config import Settings
    from streams.sources import PageSources

    src = PageSources.from_settings(Settings(store=objects.store("workers"),
                                             sources={"watcher_roots": False}))
    with src.open_verified(SITE, page_uri("sohoa-pages", SITE, sha), sha) as vf:
        assert vf.size == pdf.stat().st_size


def test_object_server_down_60s_while_pages_arrive(stack, objects, tmp_path: Path) -> None:
    env = objects_env(stack, objects, tmp_path)
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    root = Path(json.loads(env["SOHOA_WATCHER__ROOTS"])[0])
    logs = tmp_path / "logs"
    procs = (SohoaProcess(["consume"], env, logs / "consume.log"),
             SohoaProcess(["watch"], env, logs / "watch.log"))

    def page(i: int) -> None:
        # Each page its own content (the same bytes would be one object, stored already).
        write_page(root / "UBND" / f"HS-{i // 10:02d}" / f"{i % 10 + 1:03d}.png",
                   PageSpec(seed=i, dpi=50, noise=0.01))

    try:
        for i in range(5):
            page(i)
        wait_for(lambda: _scanned(env) == 5, 120, "the first pages", procs)
        objects.stop()
        down_until = time.monotonic() + 60
        i = 5
        backlog_seen = False
        while time.monotonic() < down_until:
            page(i)
            i += 1
            time.sleep(3)
            row = site_row(env)
            backlog_seen |= row.get("upload_pending_pages", 0) > 0 and bool(
                row.get("upload_error"))
        assert _scanned(env) == 5  # nothing went without its bytes
        assert backlog_seen, site_row(env)
        objects.start()
        wait_for(lambda: _scanned(env) == i, 180, "every page after the store came back",
                 procs)
        wait_for(lambda: site_row(env).get("upload_pending_pages") == 0, 60,
                 "the backlog gone", procs)
    finally:
        for p in reversed(procs):
            p.stop()
    evs = _page_events(stack, env)
    assert len(evs) == i == len({e.event_id for e in evs})
    assert "object store unreachable" in (logs / "watch.log").read_text()


def test_bandwidth_cap_1mb_s(stack, objects, tmp_path: Path) -> None:
    cap = 1_000_000
    env = objects_env(stack, objects, tmp_path, SOHOA_UPLOAD__MAX_BYTES_PER_S=str(cap))
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    root = Path(json.loads(env["SOHOA_WATCHER__ROOTS"])[0])
    logs = tmp_path / "logs"
    staged = tmp_path / "staged"
    for n in range(12):  # 12 documents of ~0.8 MB: about 10 s at the cap
        incompressible_pdf(staged / f"{n + 1:03d}.pdf", 1, 800_000, seed=n)
    total = sum(p.stat().st_size for p in staged.glob("*.pdf"))
    procs = (SohoaProcess(["consume"], env, logs / "consume.log"),
             SohoaProcess(["watch"], env, logs / "watch.log"))
    # The consumer is applying the agent's heartbeats before the pages arrive.
    wait_for(lambda: site_row(env).get("last_heartbeat_at"), 60, "a heartbeat counted", procs)
    (root / "F").mkdir()
    staged.rename(root / "F" / "HS-01")
    try:
        row = wait_for(lambda: (r := site_row(env)).get("upload_pending_pages", 0) > 0 and r,
                       60, "the backlog on `sohoa status`", procs, interval=0.5)
        assert row["upload_pending_bytes"] > 0
        text = run_sohoa(["status"], {**env, "COLUMNS": "300"}).stdout
        assert "Chờ tải lên" in text and "trang," in text  # the table shows it too
        wait_for(lambda: _scanned(env) == 12, 120, "every page", procs)
    finally:
        for p in reversed(procs):
            p.stop()
    # From the first document queued to the last one stored.
    (first,), (last,) = (_outbox(env, "SELECT min(created) FROM uploads")[0],
                         _outbox(env, "SELECT max(stored) FROM uploads")[0])
    rate = total / (last - first)
    print(f"\n{total} bytes stored in {last - first:.1f} s: {rate / 1e6:.2f} MB/s "
          f"(cap {cap / 1e6:.1f} MB/s)")
    assert rate <= cap * 1.1  # the cap holds (a quarter second's burst at most)
    assert rate >= cap * 0.5  # and the link is used, not left idle


@pytest.fixture
def small_store(tmp_path: Path):
    """A private object server whose disk is a 96 MiB tmpfs (grown later by the test)."""
    from infra.objects import ObjectStoreNode
    from infra.procs import free_port, free_port_block
    from sohoa.config import Settings

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "store-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mnt)], check=True)
    node = ObjectStoreNode(Settings().stack.model_copy(update={
        "state_dir": mnt / "state", "s3_port": free_port(), "weed_port_base": free_port_block(7),
        "object_lock_days": 1}))
    try:
        node.start(sites=OBJECT_SITES, wait=True)
        yield node, mnt
    finally:
        node.stop(timeout_s=5)
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", str(mnt)], check=True)


def test_object_server_disk_full_loses_nothing(stack, small_store, tmp_path: Path) -> None:
    node, mnt = small_store

    class Handle:  # what objects_env needs of the `objects` fixture
        def env(self, role: str) -> dict[str, str]:
            return node.store_env(role)

    env = objects_env(stack, Handle(), tmp_path, SOHOA_UPLOAD__RETRY_MAX_S="2")
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    root = Path(json.loads(env["SOHOA_WATCHER__ROOTS"])[0])
    for n in range(30):  # 30 documents of 4 MB: more than the store's disk holds
        incompressible_pdf(root / "F" / f"HS-{n // 10}" / f"{n % 10 + 1:03d}.pdf", 1,
                           4 * 1000 * 1000, seed=100 + n)
    logs = tmp_path / "logs"
    procs = (SohoaProcess(["consume"], env, logs / "consume.log"),
             SohoaProcess(["watch"], env, logs / "watch.log"))
    try:
        row = wait_for(lambda: (r := site_row(env)).get("upload_error") and r, 180,
                       "the store's refusal on `sohoa status`", procs)
        assert "InternalError" in row["upload_error"]
        wait_for(lambda: _outbox(env, "SELECT count(*) FROM outbox WHERE etype = "
                                      "'PageScanned'") == [(30,)], 120, "every page detected",
                 procs)
        # Every page is either counted or waiting, shown as waiting: none lost.
        seen: list[tuple[int, int]] = []

        def accounted() -> int | None:
            n, row = _scanned(env), site_row(env)
            seen.append((n, row.get("upload_pending_pages", 0)))
            return n if n + seen[-1][1] == 30 else None

        stuck = wait_for(accounted, 60, "every page counted or waiting", procs)
        assert 0 < stuck < 30
        assert "object store failed to write (its disk full" in (logs / "watch.log").read_text()
        time.sleep(5)
        assert _scanned(env) == stuck and all(p.alive() for p in procs)
        subprocess.run(["mount", "-o", "remount,size=400m", str(mnt)], check=True)
        wait_for(lambda: _scanned(env) == 30, 300, "every page once space returned", procs)
        wait_for(lambda: not site_row(env).get("upload_error"), 30, "the error cleared", procs)
    finally:
        for p in reversed(procs):
            p.stop()
    evs = _page_events(stack, env)
    assert len(evs) == 30 == len({e.event_id for e in evs})
    store = ObjectStore(node.store_config("workers"))
    assert all(store.head("sohoa-pages", page_key(SITE, e.document_sha256)) is not None
               for e in evs)
    assert status(env)["sites"]
