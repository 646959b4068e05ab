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
from sohoa.naming import claimed_number
from tests.support.procs import run_sohoa
from tests.support.progress_store import apply_events, fresh_db

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)


def scan(root: Path, rel: str, content: bytes, site: str = "xa-a", rev: int = 1,
         t: datetime = T0, pages: int = 1) -> list[PageScanned]:
    """Write a document and the events of its pages, as the agent sends them (the path as
    spelled on disk; fonds, file and document names in NFC)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    parts = Path(rel).parts
    digest = hashlib.sha256(content).hexdigest()
    return [PageScanned.make(site_id=site, fonds=parts[0], file_code=parts[1],
                             document=parts[2], page_index=i, document_pages=pages,
                             number=claimed_number(parts[2]) if pages == 1 else None,
                             uri=path.as_uri(), document_sha256=digest,
                             sha256=digest if pages == 1 else f"{i:064x}",
                             size_bytes=len(content), media_type="image/tiff", path=rel,
                             revision=rev, occurred_at=t) for i in range(1, pages + 1)]


def reconcile(env: dict[str, str], root: Path) -> tuple[int, dict]:
    res = run_sohoa(["reconcile", "--site", "xa-a", "--root", str(root), "--json"], env)
    return res.returncode, json.loads(res.stdout)


def test_reconcile_lists_missing_extra_and_altered(stack, tmp_path: Path) -> None:
    root = tmp_path / "hot"
    dsn = fresh_db(stack, "recon")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    # A Vietnamese folder name, written decomposed on disk as some scanners' software does.
    folder = unicodedata.normalize("NFD", "Phông UBND")
    events = [e for i in range(1, 6) for e in scan(root, f"{folder}/HS-1/{i:03d}.tif",
                                                   f"page {i}".encode(),
                                                   t=T0 + timedelta(seconds=i))]
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
    assert [(m["fonds"], m["file_code"], m["document"], m["pages"], m["numbers"])
            for m in data["missing"]] == [("Phông UBND", "HS-1", "002.tif", [1], [2])]
    assert [a["numbers"] for a in data["altered"]] == [[3]]
    assert data["altered"][0]["disk_sha256"] == hashlib.sha256(b"edited").hexdigest()
    assert [x["path"].endswith("009.tif") for x in data["extra"]] == [True]
    assert data["matched"] == 3
    # Read-only: nothing on disk changed.
    assert before == {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    # The operator's removal of page 2 reaches the database: it is no longer missing.
    rm = PageRemoved(site_id="xa-a", fonds=events[1].fonds, file_code="HS-1",
                     document="002.tif", sha256=events[1].sha256,
                     occurred_at=T0 + timedelta(minutes=5))
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
    events = [e for i in range(1, 4) for e in scan(
        root, f"UBND/HS-1/{i:03d}.tif", f"page {i}".encode(), t=T0 + timedelta(seconds=i))]
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
    assert [m["numbers"] for m in data["missing"]] == [[3]]
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


def test_a_multi_page_document_is_one_document_with_its_pages(stack, tmp_path: Path) -> None:
    """Before, each page was matched as a file of its own: a 30-page PDF on disk was 29 pages
    missing (or 30 pages "altered"); now it is one document, its pages counted and listed."""
    root = tmp_path / "hot"
    dsn = fresh_db(stack, "recon")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    events = (scan(root, "UBND/HS-2/QD-15.pdf", b"%PDF thirty pages", pages=30)
              + scan(root, "UBND/HS-2/001.tif", b"cover"))
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events)
    code, data = reconcile(env, root)
    assert code == 0 and (data["matched"], data["matched_documents"]) == (31, 2)
    (root / "UBND/HS-2/QD-15.pdf").unlink()
    code, data = reconcile(env, root)
    assert code == 1
    (missing,) = data["missing"]
    assert (missing["path"], missing["fonds"], missing["file_code"], missing["document"],
            missing["pages"]) == ("UBND/HS-2/QD-15.pdf", "UBND", "HS-2", "QD-15.pdf",
                                  list(range(1, 31)))
    out = run_sohoa(["reconcile", "--site", "xa-a", "--root", str(root)], env).stdout
    assert "văn bản QD-15.pdf, 30 trang (1–30)" in out
    assert "1 trang khớp (1 văn bản), 1 văn bản thiếu" in out


def test_a_folder_spelled_nfd_and_its_nfc_twin_are_two_paths(stack, tmp_path: Path) -> None:
    """The twin's page is not hidden behind the other's (before, both were one NFC key)."""
    root = tmp_path / "hot"
    dsn = fresh_db(stack, "recon")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    nfc = "Hồ sơ 1"
    nfd = unicodedata.normalize("NFD", nfc)
    sent = scan(root, f"UBND/{nfd}/001.tif", b"decomposed")
    scan(root, f"UBND/{nfc}/001.tif", b"composed twin")  # on disk, not (yet) in the database
    assert len(list((root / "UBND").iterdir())) == 2
    with psycopg.connect(dsn) as conn:
        apply_events(conn, sent)
    for _walk in range(3):  # the same answer at every walk
        code, data = reconcile(env, root)
        assert (code, data["matched"], data["missing"], data["altered"]) == (1, 1, [], [])
        assert [x["path"] for x in data["extra"]] == [f"UBND/{nfc}/001.tif"]


def test_a_path_stored_in_nfc_before_005_finds_its_decomposed_folder(stack,
                                                                     tmp_path: Path) -> None:
    """Rows stored before paths were kept as spelled hold NFC paths: the one folder on disk
    with that NFC form is theirs."""
    root = tmp_path / "hot"
    dsn = fresh_db(stack, "recon")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    nfd = unicodedata.normalize("NFD", "Hồ sơ 2")
    events = scan(root, f"UBND/{nfd}/001.tif", b"old page")
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events)
        conn.execute("UPDATE pages SET path = normalize(path, NFC)")
        conn.commit()
    code, data = reconcile(env, root)
    assert (code, data["matched"]) == (0, 1)
