"""Packages per minute, and package bytes per page beside the signed PDFs alone.

    python -m bench.bench_deliver                       # 6 files of 10 pages, 2 documents each
    python -m bench.bench_deliver --files 20 --pages 20

Each file's OCR output is a PDF/A-2b made by ocrmypdf from A4 colour JPEG pages at 200 dpi
(OCR skipped: packaging does not read the text); `deliver.package.build` then splits it by
document, signs each copy (PKCS#12, a CA the bench makes), writes METS/EAD/PREMIS validated
against the shipped XSDs and zips the package. Figures: packages per minute and pages per
second of that build (one process, one file after another), and the package's bytes per page
beside the signed PDFs' and the OCR output's bytes per page (the overhead of the metadata,
signatures and schemas). No broker or database: the facts are built in memory as the
progress store would give them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from bench.common import emit


def _ocr_pdf(path: Path, pages: int, seed: int) -> Path:
    import img2pdf
    import ocrmypdf

    from sohoa.samples import PageSpec, render_page
    from tests.support.pages import text_lines

    jpegs = []
    for i in range(pages):
        buf = io.BytesIO()
        render_page(PageSpec(seed=seed * 100 + i, text=text_lines(20, seed + i)))\
            .save(buf, "JPEG", quality=85, dpi=(200, 200))
        jpegs.append(buf.getvalue())
    src = path.with_suffix(".src.pdf")
    src.write_bytes(img2pdf.convert(jpegs))
    ocrmypdf.ocr(src, path, output_type="pdfa-2", tesseract_timeout=0, progress_bar=False,
                 optimize=0, language=["eng"])
    src.unlink()
    return path


def _facts(code: str, pdf: Path, pages: int):
    from deliver.facts import FileFacts, PageFact
    from sohoa.metadata import DocumentRecord, FileRecord

    t = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    half = max(1, pages // 2)
    split = {"001.pdf": half, "002.pdf": pages - half} if pages > 1 else {"001.pdf": 1}
    order = [(d, i) for d, n in split.items() for i in range(1, n + 1)]
    facts_pages = [PageFact(d, i, hashlib.sha256(f"{code}{d}{i}".encode()).hexdigest(),
                            "0" * 64, f"UBND/{code}/{d}", "application/pdf", t, t, True, t)
                   for d, i in order]
    record = FileRecord.model_validate({
        "ma_ho_so": code, "ma_phong": "H01", "muc_luc": "1",
        "so_ky_hieu_ho_so": code.rsplit(".", 1)[1], "tieu_de": f"Hồ sơ {code}",
        "thoi_han_bao_quan": "Vĩnh viễn", "che_do_su_dung": "Công khai",
        "ngon_ngu": "Tiếng Việt", "thoi_gian_bat_dau": "01/01/2019",
        "thoi_gian_ket_thuc": "31/12/2019", "tong_so_van_ban": len(split),
        "so_luong_to": pages, "so_luong_trang": pages, "muc_do_tin_cay": "Số hóa"})
    docs: dict[str, DocumentRecord | None] = {d: DocumentRecord.model_validate({
        "so_thu_tu": n, "ten_loai": "Quyết định", "ngay": "12/03/2019",
        "co_quan_ban_hanh": "UBND xã", "trich_yeu": "Về việc …", "ngon_ngu": "Tiếng Việt",
        "so_trang": p, "che_do_su_dung": "Công khai", "muc_do_tin_cay": "Số hóa"})
        for n, (d, p) in enumerate(split.items(), 1)}
    return FileFacts("xa-bench", "UBND", code, "accepted", "public", 1, t, record, list(split),
                     docs, facts_pages, pdf, hashlib.sha256(pdf.read_bytes()).hexdigest(),
                     order, t, "Xã Bench", "Huyện", "Công ty", "0.1.0")


def run(files: int, pages: int) -> dict:
    from pydantic import SecretStr

    from deliver import package as pkg
    from deliver.signing import load_key
    from sohoa.config import DeliverConfig, Settings, SigningConfig
    from tests.support.deliver_helpers import BODY, PASSPHRASE, make_ca

    with tempfile.TemporaryDirectory(prefix="sohoa-bench-deliver-") as tmp:
        d = Path(tmp)
        ca = make_ca(d / "ca")
        print(f"making {files} OCR outputs of {pages} pages …", file=sys.stderr)
        facts = [_facts(f"H01.1.{i + 1:02d}", _ocr_pdf(d / f"ocr{i}.pdf", pages, i), pages)
                 for i in range(files)]
        settings = Settings(
            signing=SigningConfig(body_name=BODY, pkcs12_path=ca.p12,
                                  pkcs12_passphrase=SecretStr(PASSPHRASE)),
            deliver=DeliverConfig(archive_code="LTLS"))
        key = load_key(settings.signing)
        pkg.build(facts[0], key, settings, d / "warm")       # imports, font cache
        per_file, built = [], []
        t0 = time.perf_counter()
        for f in facts:
            t = time.perf_counter()
            built.append(pkg.build(f, key, settings, d / "out"))
            per_file.append(time.perf_counter() - t)
        total = time.perf_counter() - t0
        n_pages = sum(b.pages for b in built)
        zip_bytes = sum(b.size for b in built)
        pdf_bytes = sum(b.pdf_bytes for b in built)
        ocr_bytes = sum(f.ocr_pdf.stat().st_size for f in facts)
        return {
            "benchmark": "deliver", "files": files, "pages_per_file": pages,
            "packages_per_minute": round(60 * files / total, 1),
            "pages_per_second": round(n_pages / total, 2),
            "median_seconds_per_package": round(median(per_file), 3),
            "package_bytes_per_page": round(zip_bytes / n_pages),
            "signed_pdf_bytes_per_page": round(pdf_bytes / n_pages),
            "ocr_pdf_bytes_per_page": round(ocr_bytes / n_pages),
            "package_overhead_percent": round(100 * (zip_bytes - pdf_bytes) / pdf_bytes, 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--pages", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    emit(run(args.files, args.pages), args.json)


if __name__ == "__main__":
    main()
