"""`sohoa reconcile`: pages on disk against PostgreSQL, read-only, exit 0 only on agreement."""

from __future__ import annotations

import hashlib
import json
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
