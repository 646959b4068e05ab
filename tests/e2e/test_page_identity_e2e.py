"""Page identity end to end, with real parts: the real agent on a hot folder, real Kafka, both
real Faust apps (assembly; QC with OCR off, so the file's verdict comes from its pages), the
real consumer and PostgreSQL. Every figure the province signs is checked against the test's
own count of what it put on disk: `sohoa status --json`, the consumer's /metrics, the monthly
and acceptance reports, and `sohoa reconcile`.

The campaign on disk:
- FONDS-A/HS-01: three single-page images, a 50-page PDF and a 20-page TIFF (73 pages);
- FONDS-A/HS-02 and FONDS-B/HS-02: one file code in two fonds, two files;
- FONDS-A/"Hồ sơ 3" spelled NFD (pages 1, 2) and NFC (page 3): one file of three pages;
- FONDS-A/HS-04: two page files claiming page 1 (both kept, the file asks for a rescan).
Then the 50-page PDF is rescanned with one page more and one page changed, and the TIFF is
deleted: the counts follow exactly, through several reconcile walks of the agent.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import unicodedata
import urllib.request
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sohoa.events import PageRemoved, PageScanned
from sohoa.samples import PageSpec, write_page
from tests.support.pages import multipage_tiff, scanner_pdf_pages, text_lines
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.streams_helpers import pipeline_env
from tests.support.typed_events import only
from tests.support.watch_helpers import read_topic

pytestmark = pytest.mark.integration

SITE = "xa-long-hung"
NFD_CODE = unicodedata.normalize("NFD", "Hồ sơ 3")
NFC_CODE = unicodedata.normalize("NFC", "Hồ sơ 3")


def spec(seed: int) -> PageSpec:
    return PageSpec(seed=seed, text=text_lines(10, seed), noise=0.002)


def _env(stack, tmp_path: Path) -> dict[str, str]:
    return pipeline_env(
        stack, tmp_path, "pid", SITE, ocr=False,
        SOHOA_WATCHER__RECONCILE_INTERVAL_S="3",
        SOHOA_STREAMS__QC_ENABLED="true",
        SOHOA_STREAMS__SITE_DUPLICATE_CHECK="false",
        SOHOA_STREAMS__LATE_PAGE_SETTLE_S="2",
        SOHOA_OCR__ENABLED="false",
        SOHOA_CONSUMER__GAUGE_CACHE_S="0",
    )


def _status(env: dict[str, str]) -> dict:
    out = run_sohoa(["status", "--json"], env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _files(env) -> dict[tuple[str, str], dict]:
    return {(f["fonds"], f["file_code"]): f for f in _status(env)["files"]}


def _metric(env: dict[str, str], name: str) -> float | None:
    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{env['SOHOA_CONSUMER__METRICS_PORT']}/metrics",
                timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(rf'^{name}(?:_total)?{{site="{SITE}"}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else None


def _monthly_total(env: dict[str, str], tmp_path: Path) -> int:
    out = tmp_path / "monthly.csv"
    # The report's month is the campaign's (Hà Nội) month, not UTC's: they differ for seven
    # hours at every month's end.
    month = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%Y-%m")
    r = run_sohoa(["report", "monthly", "--month", month, "--format", "csv", "--out",
                   str(out)], env)
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    at = next(i for i, r in enumerate(rows) if "Mã điểm" in r)
    header = rows[at]
    col = header.index("Lũy kế (trang)")
    site_col = header.index("Mã điểm")
    return sum(int(str(r[col]).replace(".", "") or 0) for r in rows[at + 1:]
               if len(r) > site_col and r[site_col] == SITE)


def _reconcile(env: dict[str, str], root: Path) -> dict:
    r = run_sohoa(["reconcile", "--site", SITE, "--root", str(root), "--json"], env)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_documents_fonds_and_spellings_are_counted_exactly(stack, tmp_path: Path) -> None:
    env = _env(stack, tmp_path)
    root = Path(json.loads(env["SOHOA_WATCHER__ROOTS"])[0])
    plan = tmp_path / "plan.csv"
    plan.write_text("site_id,name,unit,contractor,target_pages,target_files,deadline\n"
                    f"{SITE},Xã Long Hưng,Huyện Châu Thành,Công ty Số Hóa A,1000,10,"
                    "31/12/2026\n", encoding="utf-8")
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    r = run_sohoa(["campaign", "import", str(plan)], env)
    assert r.returncode == 0, r.stderr

    # --- what the test puts on disk, and so what every count must say ---
    hs1 = root / "FONDS-A" / "HS-01"
    for n in (1, 2, 3):
        write_page(hs1 / f"{n:03d}.png" if n < 3 else hs1 / f"{n:03d}.jpg", spec(n))
    scanner_pdf_pages(hs1 / "QD-15-UBND.pdf", [spec(100 + i) for i in range(50)])
    multipage_tiff(hs1 / "BB-hop.tif", [spec(200 + i) for i in range(20)])
    for fonds, seed in (("FONDS-A", 300), ("FONDS-B", 400)):
        for n in (1, 2):
            write_page(root / fonds / "HS-02" / f"{n:03d}.png", spec(seed + n))
    write_page(root / "FONDS-A" / NFD_CODE / "001.png", spec(501))
    write_page(root / "FONDS-A" / NFD_CODE / "002.png", spec(502))
    write_page(root / "FONDS-A" / NFC_CODE / "003.png", spec(503))
    write_page(root / "FONDS-A" / "HS-04" / "001.png", spec(601))
    write_page(root / "FONDS-A" / "HS-04" / "trang-001.png", spec(602))
    expected = {("FONDS-A", "HS-01"): (73, 5), ("FONDS-A", "HS-02"): (2, 2),
                ("FONDS-B", "HS-02"): (2, 2), ("FONDS-A", NFC_CODE): (3, 3),
                ("FONDS-A", "HS-04"): (2, 2)}
    total = sum(p for p, _ in expected.values())
    for fonds, code in expected:
        folder = root / fonds / (code if code != NFC_CODE else NFD_CODE)
        (folder / "DONE").touch()

    logs = tmp_path / "logs"
    procs = (SohoaProcess(["consume"], env, logs / "consume.log"),
             SohoaProcess(["streams", "--role", "all"], env, logs / "streams.log"),
             SohoaProcess(["watch"], env, logs / "watch.log"))
    try:
        def settled(want: dict[tuple[str, str], tuple[int, int]], states: set[str]):
            def check():
                files = _files(env)
                got = {k: (files[k]["pages"], files[k]["documents"]) for k in want
                       if k in files}
                done = all(files.get(k, {}).get("state") in states for k in want)
                return files if got == want and done else None
            return check

        files = wait_for(settled(expected, {"accepted", "needs_rescan", "rejected"}), 400,
                         "every file counted and judged", procs, interval=2.0)
        for k in expected:
            assert files[k]["checked_pages"] == files[k]["pages"], (k, files[k])
        accepted = {k for k, f in files.items() if f["state"] == "accepted"}
        assert accepted == set(expected) - {("FONDS-A", "HS-04")}, {
            k: (f["state"], f.get("verdict")) for k, f in files.items()}
        assert files[("FONDS-A", "HS-04")]["state"] == "needs_rescan"

        # Every figure agrees with the disk.
        site = next(s for s in _status(env)["sites"] if s["site_id"] == SITE)
        assert site["pages"] == total == 82
        assert _monthly_total(env, tmp_path) == total
        wait_for(lambda: _metric(env, "sohoa_site_pages_scanned") == total, 60,
                 "the consumer's /metrics", procs)
        rec = _reconcile(env, root)
        assert rec["ok"], rec
        assert rec["matched"] == total

        # --- the 50-page PDF rescanned with one page more and page 7 changed; the TIFF gone
        pdf_specs = [spec(100 + i) for i in range(50)] + [spec(150)]
        pdf_specs[6] = spec(999)
        tmp = hs1 / ".QD-15-UBND.pdf.part"
        scanner_pdf_pages(tmp, pdf_specs)
        tmp.replace(hs1 / "QD-15-UBND.pdf")
        (hs1 / "BB-hop.tif").unlink()
        expected[("FONDS-A", "HS-01")] = (73 + 1 - 20, 4)
        total += 1 - 20
        wait_for(settled(expected, {"accepted"} | {"needs_rescan"}), 300,
                 "the rescan and the deletion counted", procs, interval=2.0)
        time.sleep(10)  # several of the agent's reconcile walks (every 3 s)
        files = _files(env)
        assert {k: (files[k]["pages"], files[k]["documents"]) for k in expected} == expected
        assert sum(f["pages"] for f in files.values()) == total
        assert _reconcile(env, root)["ok"]
        assert _monthly_total(env, tmp_path) == total
        wait_for(lambda: _metric(env, "sohoa_site_pages_scanned") == total, 60,
                 "the consumer's /metrics after the rescan", procs)
    finally:
        for p in reversed(procs):
            p.stop()

    # What travelled: the rescan revised exactly one page and added one, removed twenty.
    evs = read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"], 2000)
    pdf = [e for e in only(evs, PageScanned) if e.document == "QD-15-UBND.pdf"]
    assert len({(e.page_index, e.revision) for e in pdf}) == 50 + 1 + 1
    assert {(e.page_index, e.revision) for e in pdf if e.revision == 2} == {(7, 2)}
    removed = only(evs, PageRemoved)
    assert sorted((e.document, e.page_index) for e in removed) == [
        ("BB-hop.tif", i) for i in range(1, 21)]
    # The twin folders never flipped: no removal for them through every walk.
    assert not [e for e in removed if e.file_code == NFC_CODE]
