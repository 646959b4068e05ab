"""`sohoa reconcile`: pages on disk against PostgreSQL, read-only, exit 0 only on agreement."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from sohoa.events import PageRemoved, PageScanned
from tests.procs import run_sohoa
from tests.test_consumer_support import apply_events, fresh_db

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)


def scan(root: Path, rel: str, content: bytes, site: str = "xa-a", rev: int = 1,
         t: datetime = T0) -> PageScanned:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    parts = Path(rel).parts
    return PageScanned.make(site_id=site, fonds=parts[0], file_code=parts[1],
                            page_no=int(Path(rel).stem), uri=path.as_uri(),
                            sha256=hashlib.sha256(content).hexdigest(),
                            size_bytes=len(content), media_type="image/tiff",
                            path=unicodedata.normalize("NFC", rel),  # as the agent sends it
                            revision=rev, occurred_at=t)


def test_reconcile_lists_missing_extra_and_altered(stack, tmp_path: Path) -> None:
    root = tmp_path / "hot"
    dsn = fresh_db(stack, "recon")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    # A Vietnamese folder name, written decomposed on disk as some scanners' software does.
    folder = unicodedata.normalize("NFD", "Phông UBND")
    events = [scan(root, f"{folder}/HS-1/{i:03d}.tif", f"page {i}".encode(),
                   t=T0 + timedelta(seconds=i)) for i in range(1, 6)]
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events)
    ok = run_sohoa(["reconcile", "--site", "xa-a", "--root", str(root)], env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "5 trang khớp" in ok.stdout

    (root / folder / "HS-1" / "002.tif").unlink()                       # missing
    (root / folder / "HS-1" / "003.tif").write_bytes(b"edited")         # altered
    (root / folder / "HS-1" / "009.tif").write_bytes(b"never sent")     # extra
    (root / folder / "HS-1" / "Thumbs.db").write_bytes(b"x")            # ignored
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    res = run_sohoa(["reconcile", "--site", "xa-a", "--root", str(root), "--json"], env)
    assert res.returncode == 1
    data = json.loads(res.stdout)
    assert [m["page_no"] for m in data["missing"]] == [2]
    assert [a["page_no"] for a in data["altered"]] == [3]
    assert data["altered"][0]["disk_sha256"] == hashlib.sha256(b"edited").hexdigest()
    assert [x["path"].endswith("009.tif") for x in data["extra"]] == [True]
    assert data["matched"] == 3
    # Read-only: nothing on disk changed.
    assert before == {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    # The operator's removal of page 2 reaches the database: it is no longer missing.
    rm = PageRemoved(site_id="xa-a", fonds=events[1].fonds, file_code="HS-1", page_no=2,
                     sha256=events[1].sha256, occurred_at=T0 + timedelta(minutes=5))
    with psycopg.connect(dsn) as conn:
        apply_events(conn, [rm])
    res = run_sohoa(["reconcile", "--site", "xa-a", "--root", str(root), "--json"], env)
    assert json.loads(res.stdout)["missing"] == []
    assert res.returncode == 1  # still altered and extra


@pytest.mark.timeout(120)  # a FIFO read would block forever: fail, not hang
def test_reconcile_reads_only_regular_files_under_the_root(stack, tmp_path: Path) -> None:
    import socket

    root = tmp_path / "hot"
    dsn = fresh_db(stack, "recon_links")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn, "SOHOA_WATCHER__MAX_FILE_BYTES": "1000"}
    events = [scan(root, f"UBND/HS-1/{i:03d}.tif", f"page {i}".encode(),
                   t=T0 + timedelta(seconds=i)) for i in range(1, 4)]
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events)
    folder = root / "UBND" / "HS-1"
    # Page 3, counted in the database, replaced by a link to a secret file.
    (folder / "003.tif").unlink()
    (folder / "003.tif").symlink_to("/etc/passwd")
    (folder / "004.tif").symlink_to("/etc/passwd")
    (folder / "005.tif").symlink_to("/dev/zero")
    os.mkfifo(folder / "006.tif")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "007.tif"))
    (folder / "008.tif").write_bytes(b"x" * 1001)  # over watcher.max_file_bytes
    (root / "UBND" / "HS-ETC").symlink_to("/etc", target_is_directory=True)
    (root / "UBND" / "HS-ETC2").symlink_to(folder, target_is_directory=True)
    try:
        res = run_sohoa(["reconcile", "--site", "xa-a", "--root", str(root), "--json"], env,
                        timeout=100)
    finally:
        sock.close()
    assert res.returncode == 1, res.stdout + res.stderr
    data = json.loads(res.stdout)
    assert data["matched"] == 2
    assert [m["page_no"] for m in data["missing"]] == [3]
    assert data["extra"] == [] and data["altered"] == []
    skipped = {s["path"]: s["reason"] for s in data["skipped"]}
    assert set(skipped) == {f"UBND/HS-1/{n:03d}.tif" for n in range(3, 9)} | {
        "UBND/HS-ETC", "UBND/HS-ETC2"}
    assert "symlink" in skipped["UBND/HS-1/003.tif"]
    assert "FIFO" in skipped["UBND/HS-1/006.tif"]
    assert "max_file_bytes" in skipped["UBND/HS-1/008.tif"]
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    assert passwd not in res.stdout and "root:" not in res.stdout


def test_sha256_file_refuses_what_is_not_the_walked_regular_file(tmp_path: Path) -> None:
    from consumers.reconcile import NotReadable, sha256_file

    page = tmp_path / "001.tif"
    page.write_bytes(b"page")
    seen = os.lstat(page)
    assert sha256_file(page, 100, seen) == hashlib.sha256(b"page").hexdigest()
    # Swapped between the walk and the read: another file at the same path.
    (tmp_path / "new").write_bytes(b"other")
    os.replace(tmp_path / "new", page)
    with pytest.raises(NotReadable, match="changed"):
        sha256_file(page, 100, seen)
    with pytest.raises(NotReadable, match="max_file_bytes"):
        sha256_file(page, 3)
    link = tmp_path / "002.tif"
    link.symlink_to(page)
    with pytest.raises(NotReadable, match="symlink"):
        sha256_file(link, 100)
    fifo = tmp_path / "003.tif"
    os.mkfifo(fifo)
    with pytest.raises(NotReadable, match="FIFO"):
        sha256_file(fifo, 100)
