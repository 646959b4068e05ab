"""The site agent as a real `sohoa watch` process against the real Kafka broker."""

from __future__ import annotations

import json
import time
import unicodedata
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from sohoa.events import DeadLetter
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.typed_events import each
from tests.support.watch_helpers import (
    agent_env,
    hot,
    of_type,
    read_topic,
    tiny_image,
    write_atomic,
)

pytestmark = pytest.mark.integration


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scanned(stack, env) -> list:
    return of_type(read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"], 1500), "PageScanned")


def test_dropped_page_arrives_then_sigterm_exits_zero(stack, tmp_path: Path) -> None:
    port = _free_port()
    env = agent_env(stack, tmp_path, SOHOA_WATCHER__METRICS_PORT=str(port))
    agent = SohoaProcess(["watch"], env, tmp_path / "watch.log")
    try:
        time.sleep(1.0)
        data = tiny_image("PNG", seed=1)
        page = hot(env) / "UBND" / "HS-001" / "001.png"
        write_atomic(page, data)
        found = wait_for(lambda: _scanned(stack, env), 60, "PageScanned on Kafka", (agent,))
        ev = found[0]
        assert (ev.site_id, ev.fonds, ev.file_code, ev.number) == ("xa-test", "UBND", "HS-001", 1)
        assert ev.uri == page.as_uri() and ev.path == "UBND/HS-001/001.png"
        assert ev.size_bytes == len(data) and ev.media_type == "image/png"
        import hashlib

        assert ev.sha256 == hashlib.sha256(data).hexdigest() and ev.revision == 1

        def heartbeat():
            evs = read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"], 1000)
            return [h for h in of_type(evs, "SiteHeartbeat") if h.outbox_depth == 0]

        hb = wait_for(heartbeat, 30, "a heartbeat with an empty outbox", (agent,))[-1]
        assert hb.roots == [str(hot(env))] and hb.disk_free_bytes > 0 and hb.agent_version

        def metrics():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return None
            ok = 'sohoa_watcher_pages_sent_total{site="xa-test"} 1.0' in text
            return text if ok else None

        text = wait_for(metrics, 30, "pages_sent on /metrics", (agent,))
        assert 'sohoa_watcher_pages_detected_total{site="xa-test"} 1.0' in text
        assert 'sohoa_watcher_outbox_depth{site="xa-test"} 0.0' in text
        assert "sohoa_watcher_last_page_timestamp_seconds" in text
    finally:
        code = agent.stop()
    assert code == 0, agent.tail()


def test_once_sends_pending_and_never_resends_unchanged(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path)
    folder = hot(env) / "UBND" / "HS-002"
    for n in range(1, 6):
        write_atomic(folder / f"trang {n:03d}.PNG", tiny_image("PNG", seed=n))
    first = run_sohoa(["watch", "--once"], env)
    assert first.returncode == 0, first.stderr
    evs = _scanned(stack, env)
    assert sorted(e.number for e in evs) == [1, 2, 3, 4, 5]
    assert {e.file_code for e in evs} == {"HS-002"}

    again = run_sohoa(["watch", "--once"], env)
    assert again.returncode == 0, again.stderr
    assert len(_scanned(stack, env)) == 5, "an unchanged page was sent again"


def test_rescan_is_a_new_revision_and_delete_is_reported(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path)
    folder = hot(env) / "F" / "HS-003"
    write_atomic(folder / "001.tif", tiny_image("TIFF", seed=1))
    write_atomic(folder / "002.tif", tiny_image("TIFF", seed=2))
    assert run_sohoa(["watch", "--once"], env).returncode == 0
    # The operator rescans page 1 (new bytes), touches page 2 without changing it.
    write_atomic(folder / "001.tif", tiny_image("TIFF", seed=101))
    p2 = folder / "002.tif"
    p2.write_bytes(p2.read_bytes())
    r = run_sohoa(["watch", "--once"], env)
    assert r.returncode == 0, r.stderr
    evs = _scanned(stack, env)
    assert sorted((e.number, e.revision) for e in evs) == [(1, 1), (1, 2), (2, 1)]
    assert len({e.event_id for e in evs}) == 3
    # The operator deletes page 2.
    p2.unlink()
    assert run_sohoa(["watch", "--once"], env).returncode == 0
    all_evs = read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"], 1500)
    removed = of_type(all_evs, "PageRemoved")
    assert [(e.file_code, e.document) for e in removed] == [("HS-003", "002.tif")]
    assert removed[0].sha256 == next(e.sha256 for e in evs if e.number == 2)
    # It comes back (same bytes): counted again as a new revision, not swallowed as a replay.
    write_atomic(p2, tiny_image("TIFF", seed=2))
    assert run_sohoa(["watch", "--once"], env).returncode == 0
    back = [e for e in _scanned(stack, env) if e.number == 2]
    assert sorted(e.revision for e in back) == [1, 2]


def test_unreachable_kafka_keeps_events_and_exit_75_then_same_ids(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path)
    folder = hot(env) / "F" / "HS-004"
    for n in (1, 2, 3):
        write_atomic(folder / f"{n}.png", tiny_image("PNG", seed=n))
    dead = {**env, "SOHOA_KAFKA__BOOTSTRAP": "127.0.0.1:1", "SOHOA_WATCHER__ONCE_TIMEOUT_S": "3",
            "SOHOA_WATCHER__KAFKA_BLOCK_S": "1"}
    r = run_sohoa(["watch", "--once"], dead)
    assert r.returncode == 75, r.stderr
    assert "Kafka" in r.stderr
    import sqlite3

    db = sqlite3.connect(env["SOHOA_WATCHER__OUTBOX_PATH"])
    queued = dict(db.execute("SELECT event_id, etype FROM outbox WHERE sent IS NULL"))
    db.close()
    assert sorted(queued.values()) == ["PageScanned"] * 3
    r = run_sohoa(["watch", "--once"], env)
    assert r.returncode == 0, r.stderr
    assert {e.event_id for e in _scanned(stack, env)} == set(queued)


def test_bad_config_exits_78(tmp_path: Path) -> None:
    env = {"SOHOA_WATCHER__SITE_ID": "Xã Tân Phú", "SOHOA_WATCHER__ROOTS": json.dumps(
        [str(tmp_path)]), "SOHOA_WATCHER__OUTBOX_PATH": str(tmp_path / "o" / "ob.sqlite3")}
    r = run_sohoa(["watch", "--once"], env)
    assert r.returncode == 78 and "cấu hình" in r.stderr
    env["SOHOA_WATCHER__SITE_ID"] = "xa-a"
    env["SOHOA_WATCHER__LAYOUT"] = "{fonds}/{page}"
    r = run_sohoa(["watch", "--once"], env)
    assert r.returncode == 78 and "layout" in r.stderr


def test_second_agent_on_same_outbox_is_refused(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path)
    agent = SohoaProcess(["watch"], env, tmp_path / "watch.log")
    try:
        time.sleep(2)
        r = run_sohoa(["watch", "--once"], env)
        assert r.returncode == 75, r.stderr
    finally:
        assert agent.stop() == 0


def test_slow_writer_and_rename_count_once(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path, SOHOA_WATCHER__STABILITY_WINDOW_S="1.0")
    agent = SohoaProcess(["watch"], env, tmp_path / "watch.log")
    folder = hot(env) / "F" / "HS-005"
    folder.mkdir(parents=True)
    try:
        time.sleep(1.0)
        data = tiny_image("TIFF", seed=7, size=(64, 64))
        slow = folder / "001.tif"
        # A scanner writing one page slowly: pieces every 0.4 s for ~5 s, under the window.
        with open(slow, "wb") as f:
            step = len(data) // 12 + 1
            for i in range(0, len(data), step):
                f.write(data[i:i + step])
                f.flush()
                time.sleep(0.4)
        # Write-to-temp-then-rename: the temp name is never a page.
        tmp = folder / "002.tif.part"
        tmp.write_bytes(tiny_image("TIFF", seed=8))
        tmp.rename(folder / "002.tif")
        evs = wait_for(lambda: (lambda s: s if len(s) >= 2 else None)(_scanned(stack, env)),
                       60, "two pages", (agent,))
        time.sleep(3)
        evs = _scanned(stack, env)
        assert sorted(e.number for e in evs) == [1, 2]
        import hashlib

        assert [e.document_sha256 for e in evs if e.number == 1] == [
            hashlib.sha256(data).hexdigest()]
        dead = each(read_topic(stack, env["SOHOA_TOPICS__DEAD_LETTERS"], 1000), DeadLetter)
        assert dead == [], [d.reason for d in dead]
    finally:
        assert agent.stop() == 0


def test_nfd_and_nfc_names_are_one_file(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path)
    code = "Hồ sơ số 12"
    nfd_dir = hot(env) / "Phông UBND" / unicodedata.normalize("NFD", code)
    write_atomic(nfd_dir / "001.jpg", _jpeg(1))
    assert run_sohoa(["watch", "--once"], env).returncode == 0
    # The same file folder spelled NFC by a Windows PC later: one and the same file code.
    nfc_dir = hot(env) / "Phông UBND" / unicodedata.normalize("NFC", code)
    write_atomic(nfc_dir / "002.JPG", _jpeg(2))
    assert run_sohoa(["watch", "--once"], env).returncode == 0
    evs = _scanned(stack, env)
    assert sorted(e.number for e in evs) == [1, 2]
    assert {e.file_code for e in evs} == {unicodedata.normalize("NFC", code)}
    assert {e.key() for e in evs} == {
        f"xa-test/Phông UBND/{unicodedata.normalize('NFC', code)}"}
    for e in evs:  # the URI and path name the bytes on disk, as spelled there
        assert Path(unquote(urlparse(e.uri).path)).is_file()
        assert (hot(env) / e.path).is_file()


def _jpeg(seed: int) -> bytes:
    return tiny_image("JPEG", seed=seed)


def test_manifest_marker_and_classified_title(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path)
    root = hot(env)
    a = root / "F" / "HS-A"
    b = root / "F" / "HS-B"
    c = root / "F" / "HS-C"
    for i, folder in enumerate((a, b, c)):
        for n in (1, 2):
            write_atomic(folder / f"{n:03d}.png", tiny_image("PNG", seed=10 * i + n))
    (a / "hoso.json").write_text(json.dumps(
        {"title": "Hồ sơ giao đất", "expected_pages": 2, "start_date": "2024-01-02",
         "so_ky_hieu": "12/QĐ-UBND"}, ensure_ascii=False), encoding="utf-8")
    (b / "hoso.json").write_text(json.dumps(
        {"title": "Hồ sơ mật", "expected_pages": 2, "classification": "secret"}),
        encoding="utf-8")
    (c / "hoso.json").write_text(json.dumps({"title": "x", "expected_pages": "nhiều"}),
                                 encoding="utf-8")
    (a / "DONE").touch()
    r = run_sohoa(["watch", "--once"], env)
    assert r.returncode == 0, r.stderr
    evs = read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"], 1500)
    manifests = {m.file_code: m for m in of_type(evs, "FileManifest")}
    assert set(manifests) == {"HS-A", "HS-B"}
    assert manifests["HS-A"].title == "Hồ sơ giao đất"
    assert manifests["HS-A"].metadata == {"so_ky_hieu": "12/QĐ-UBND"}
    assert manifests["HS-B"].title is None and manifests["HS-B"].classification == "secret"
    assert "Hồ sơ mật" not in json.dumps([e.to_dict() for e in evs], ensure_ascii=False)
    closed = of_type(evs, "FileClosed")
    assert [(e.file_code, e.reason, e.expected_pages, e.pages_seen) for e in closed] == [
        ("HS-A", "marker", 2, 2)]
    # FileClosed comes after the file's pages on the file's partition.
    a_events = [e.NAME for e in evs if getattr(e, "file_code", None) == "HS-A"]
    assert a_events[-1] == "FileClosed" and a_events.count("PageScanned") == 2
    # The bad manifest is reported with the field at fault; its pages still count.
    dead = each(read_topic(stack, env["SOHOA_TOPICS__DEAD_LETTERS"], 1000), DeadLetter)
    assert len(dead) == 1 and "bad_manifest" in dead[0].reason
    assert "expected_pages" in dead[0].reason
    assert len([e for e in of_type(evs, "PageScanned") if e.file_code == "HS-C"]) == 2


def test_polling_mode_for_network_shares(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path, SOHOA_WATCHER__POLLING="true",
                    SOHOA_WATCHER__POLL_INTERVAL_S="0.5")
    agent = SohoaProcess(["watch"], env, tmp_path / "watch.log")
    try:
        time.sleep(1.5)
        write_atomic(hot(env) / "F" / "HS-P" / "001.png", tiny_image("PNG", 5))
        evs = wait_for(lambda: _scanned(stack, env), 60, "PageScanned in polling mode",
                       (agent,))
        assert [(e.file_code, e.number) for e in evs] == [("HS-P", 1)]
        assert '"polling": true' in agent.log.read_text()
    finally:
        assert agent.stop() == 0
