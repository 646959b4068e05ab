"""From the hot folder to a verified hand-over, with real parts: the agent, Kafka, both Faust
apps with QC and real OCR (Tesseract), the consumer and PostgreSQL, then `sohoa handover
build` and `sohoa handover verify` (pyHanko, veraPDF, eark-validator) as processes.

Three hồ sơ of one fonds:
- H01.1.01: a 2-page scanner PDF and a one-page image (hoso.json carries the records);
- H01.1.02: a map scanned at 300 dpi (its type, "Bản đồ địa chính", raises QC's floor);
- H01.1.03: metadata loaded from the XLSX template by `sohoa metadata import`.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from sohoa.samples import PageSpec, write_page
from tests.support.deliver_helpers import BODY, PASSPHRASE, make_ca
from tests.support.metadata_helpers import GOOD_DOC, GOOD_FILE, fill_sheets
from tests.support.pages import scanner_pdf_pages, text_lines
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.streams_helpers import pipeline_env

pytestmark = [pytest.mark.integration, pytest.mark.ocr]
SITE, FONDS = "xa-tan-phu", "UBND"
A5 = (148.0, 210.0)


def _spec(seed: int, dpi: int = 200) -> PageSpec:
    return PageSpec(seed=seed, dpi=dpi, size_mm=A5, text=text_lines(8, seed), noise=0.001)


def _records(code: str, docs: dict[str, tuple[int, str]]) -> tuple[dict, dict[str, dict]]:
    rec = {**GOOD_FILE, "ma_ho_so": code, "so_ky_hieu_ho_so": code.rsplit(".", 1)[1],
           "tong_so_van_ban": len(docs), "so_luong_to": sum(p for p, _ in docs.values()),
           "so_luong_trang": sum(p for p, _ in docs.values())}
    return rec, {d: {**GOOD_DOC, "so_thu_tu": i, "so_trang": p, "ten_loai": kind}
                 for i, (d, (p, kind)) in enumerate(docs.items(), 1)}


def _hoso(folder: Path, code: str, docs: dict[str, tuple[int, str]]) -> None:
    rec, drec = _records(code, docs)
    (folder / "hoso.json").write_text(json.dumps(
        {"expected_pages": rec["so_luong_trang"], "record": rec,
         "documents": [{"name": d, "record": drec[d]} for d in docs]}, ensure_ascii=False),
        encoding="utf-8")


def _env(stack, tmp_path: Path, ca) -> dict[str, str]:
    return pipeline_env(
        stack, tmp_path, "del", SITE, ocr=True,
        SOHOA_STREAMS__QC_ENABLED="true",
        SOHOA_STREAMS__SITE_DUPLICATE_CHECK="false",
        SOHOA_QC__WORKERS="1",
        SOHOA_SIGNING__BODY_NAME=BODY,
        SOHOA_SIGNING__PKCS12_PATH=str(ca.p12),
        SOHOA_SIGNING__PKCS12_PASSPHRASE=PASSPHRASE,
        SOHOA_SIGNING__TRUST_ROOTS=json.dumps([str(ca.root_pem)]),
        SOHOA_DELIVER__ARCHIVE_CODE="LTLS",
        SOHOA_DELIVER__AGENCY_NAME="UBND xã Tân Phú",
        SOHOA_DELIVER__RECEIVER_NAME="Lưu trữ lịch sử tỉnh",
    )


def _files(env) -> dict[str, dict]:
    out = run_sohoa(["status", "--json"], env)
    assert out.returncode == 0, out.stderr
    return {f["file_code"]: f for f in json.loads(out.stdout)["files"]}


def test_hot_folder_to_verified_handover(stack, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    env = _env(stack, tmp_path, ca)
    root = Path(json.loads(env["SOHOA_WATCHER__ROOTS"])[0])
    assert run_sohoa(["db", "migrate"], env).returncode == 0

    f1 = root / FONDS / "H01.1.01"
    scanner_pdf_pages(f1 / "001.pdf", [_spec(1), _spec(2)])
    write_page(f1 / "002.png", _spec(3))
    _hoso(f1, "H01.1.01", {"001.pdf": (2, "Quyết định"), "002.png": (1, "Tờ trình")})
    f2 = root / FONDS / "H01.1.02"
    write_page(f2 / "001.png", _spec(4, dpi=300))
    _hoso(f2, "H01.1.02", {"001.png": (1, "Bản đồ địa chính")})
    f3 = root / FONDS / "H01.1.03"
    write_page(f3 / "001.png", _spec(5))
    xlsx = tmp_path / "muc-luc.xlsx"
    assert run_sohoa(["metadata", "template", str(xlsx)], env).returncode == 0
    rec, drec = _records("H01.1.03", {"001.png": (1, "Công văn")})
    fill_sheets(xlsx, [{"fonds": FONDS, **rec, "thoi_gian_bat_dau": date(2019, 2, 1)}],
                [{"fonds": FONDS, "file": "H01.1.03", "doc": "001.png", **drec["001.png"],
                  "ngay": date(2019, 3, 12)}])
    r = run_sohoa(["metadata", "import", str(xlsx)], env)
    assert r.returncode == 0, r.stderr
    for folder in (f1, f2, f3):
        (folder / "DONE").touch()

    logs = tmp_path / "logs"
    procs = (SohoaProcess(["consume"], env, logs / "consume.log"),
             SohoaProcess(["streams", "--role", "all"], env, logs / "streams.log"),
             SohoaProcess(["watch"], env, logs / "watch.log"))
    codes = ("H01.1.01", "H01.1.02", "H01.1.03")
    try:
        files = wait_for(lambda: (lambda fs: fs if all(
            fs.get(c, {}).get("state") in ("accepted", "needs_rescan", "rejected")
            for c in codes) else None)(_files(env)), 600, "three files judged", procs,
            interval=3.0)
    finally:
        for p in reversed(procs):
            p.stop()
    assert {c: files[c]["state"] for c in codes} == dict.fromkeys(codes, "accepted")
    assert files["H01.1.01"]["pages"] == 3 and files["H01.1.01"]["documents"] == 2

    out = tmp_path / "ban-giao"
    r = run_sohoa(["handover", "build", "--fonds", FONDS, "--out", str(out)], env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    [hv] = [p for p in out.iterdir() if p.is_dir()]
    assert sorted(p.name for p in (hv / "goi").iterdir()) == [
        f"AIP_hoso_LTLS.{c}.zip" for c in codes]
    r = run_sohoa(["handover", "verify", str(hv)], env, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ĐẠT: 3 gói, 4 bản PDF/A" in r.stdout
    files = _files(env)
    assert {c: files[c]["deliverable"] for c in codes} == dict.fromkeys(codes, "verified")
