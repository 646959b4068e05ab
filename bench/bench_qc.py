"""Page QC on a long document beside the same pages as single files, in one run.

    python -m bench.bench_qc                    # 300 pages, 2 workers, chunks of 25 pages
    python -m bench.bench_qc --pages 500 --chunk 50

Figures:
- QC pages/s of a 300-page scanner PDF (one JPEG per page, A4 at 200 dpi, colour), checked
  by `streams.qc.check_document_pages` in a spawn process pool of `--workers` processes, the
  document split into chunks of `--chunk` pages (as the OCR app will share a long document
  between pool workers), beside the same JPEGs as 300 single-page files checked one file per
  task in the same pool; runs alternate (single, PDF, single, PDF, …) and the median is the
  figure;
- the agent's side: `sohoa.documents.inspect_document` on that PDF (structure, page count, page
  digests, file SHA-256) beside a bare SHA-256 of the same bytes (the raw limit) and beside
  inspecting the 300 single files;
- the pool workers' peak resident memory (bounded: one page decoded at a time).

No broker or database: QC is a pure function of the files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

from bench.common import emit

if TYPE_CHECKING:
    from sohoa.config import QcConfig


def make_pages(folder: Path, n: int, distinct: int) -> tuple[Path, list[Path]]:
    """``n`` JPEG pages (``distinct`` different renderings, cycled) as single files, and one
    PDF with the same JPEGs as its pages."""
    import img2pdf

    from sohoa.samples import SAMPLE_LINES, PageSpec, render_page

    jpegs: list[bytes] = []
    for k in range(distinct):
        lines = SAMPLE_LINES[k % len(SAMPLE_LINES):] + SAMPLE_LINES[:k % len(SAMPLE_LINES)]
        buf = io.BytesIO()
        render_page(PageSpec(seed=k, text=lines, skew_deg=0.3 * (k % 3)))\
            .save(buf, "JPEG", quality=85, dpi=(200, 200))
        jpegs.append(buf.getvalue())
    singles = []
    for i in range(n):
        p = folder / f"{i + 1:04d}.jpg"
        p.write_bytes(jpegs[i % distinct])
        singles.append(p)
    pdf = folder / "document.pdf"
    pdf.write_bytes(img2pdf.convert([jpegs[i % distinct] for i in range(n)]))
    return pdf, singles


def _inspect(path: Path) -> tuple[str, tuple[str, ...]]:
    from sohoa.documents import inspect_document

    with open(path, "rb") as f:
        facts = inspect_document(f, path.stat().st_size)
    return facts.media_type, facts.page_sha256


def qc_pdf(pool: ProcessPoolExecutor, pdf: Path, media: str, digests: tuple[str, ...],
           chunk: int, cfg: QcConfig) -> tuple[float, int]:
    from streams.qc import check_document_pages

    pages = [(i + 1, d) for i, d in enumerate(digests)]
    t0 = time.perf_counter()
    futs = [pool.submit(check_document_pages, str(pdf), media, pages[k:k + chunk], cfg)
            for k in range(0, len(pages), chunk)]
    results = [r for f in futs for r in f.result()]
    took = time.perf_counter() - t0
    return took, sum(r.decoded for r in results)


def qc_singles(pool: ProcessPoolExecutor, singles: list[Path],
               cfg: QcConfig) -> tuple[float, int]:
    from streams.qc import check_document_pages

    jobs = [(str(p), "image/jpeg", [(1, hashlib.sha256(p.read_bytes()).hexdigest())])
            for p in singles]
    t0 = time.perf_counter()
    futs = [pool.submit(check_document_pages, path, media, pages, cfg)
            for path, media, pages in jobs]
    results = [r for f in futs for r in f.result()]
    took = time.perf_counter() - t0
    return took, sum(r.decoded for r in results)


def _warm() -> None:
    """Imports a worker needs (numpy, scipy, Pillow, pikepdf), so the clock measures QC."""
    import pikepdf  # noqa: F401
    import scipy.ndimage  # noqa: F401

    import streams.qc  # noqa: F401


def run(n: int, workers: int, chunk: int, distinct: int, rounds: int) -> dict:
    from sohoa.config import QcConfig

    cfg = QcConfig()
    with tempfile.TemporaryDirectory(prefix="sohoa-bench-qc-") as tmp:
        folder = Path(tmp)
        print(f"making {n} pages …", file=sys.stderr)
        pdf, singles = make_pages(folder, n, distinct)
        pdf_mb = pdf.stat().st_size / 1e6

        # The agent's side, three times each (page cache warm after the first).
        t_hash, t_inspect, t_single = [], [], []
        for _ in range(3):
            t = time.perf_counter()
            hashlib.sha256(pdf.read_bytes()).hexdigest()
            t_hash.append(time.perf_counter() - t)
            t = time.perf_counter()
            media, digests = _inspect(pdf)
            t_inspect.append(time.perf_counter() - t)
            t = time.perf_counter()
            for p in singles:
                _inspect(p)
            t_single.append(time.perf_counter() - t)
        assert len(digests) == n, (len(digests), n)

        ctx = multiprocessing.get_context("spawn")
        pdf_rates, single_rates = [], []
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for f in [pool.submit(_warm) for _ in range(workers)]:
                f.result()
            for r in range(rounds):
                took, ok = qc_singles(pool, singles, cfg)
                assert ok == n, f"single files: {ok} of {n} pages decoded"
                single_rates.append(n / took)
                took, ok = qc_pdf(pool, pdf, media, digests, chunk, cfg)
                assert ok == n, f"PDF: {ok} of {n} pages decoded"
                pdf_rates.append(n / took)
                print(f"round {r + 1}: single files {single_rates[-1]:.1f} pages/s, "
                      f"PDF {pdf_rates[-1]:.1f} pages/s", file=sys.stderr)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    pdf_rate, single_rate = median(pdf_rates), median(single_rates)
    figures = [
        {"name": f"QC of a {n}-page PDF ({pdf_mb:.0f} MB, DCT pages, A4 200 dpi), "
                 f"{workers} workers, chunks of {chunk} pages, median of {rounds}",
         "value": round(pdf_rate, 1), "unit": "pages/s"},
        {"name": f"QC of the same {n} pages as single JPEG files, same pool, median of {rounds}",
         "value": round(single_rate, 1), "unit": "pages/s"},
        {"name": "  PDF / single files", "value": round(pdf_rate / single_rate, 3),
         "unit": "ratio"},
        {"name": "  rounds, PDF", "value": " / ".join(f"{r:.1f}" for r in pdf_rates),
         "unit": "pages/s"},
        {"name": "  rounds, single files", "value": " / ".join(f"{r:.1f}" for r in single_rates),
         "unit": "pages/s"},
        {"name": f"agent side: inspect_document of the {n}-page PDF (count, {n} page digests, "
                 f"file SHA-256), best of 3", "value": round(min(t_inspect) * 1000, 1),
         "unit": "ms"},
        {"name": "  raw limit: SHA-256 of the same bytes (read + hash), best of 3",
         "value": round(min(t_hash) * 1000, 1), "unit": "ms"},
        {"name": f"  inspect_document of the {n} single files, best of 3",
         "value": round(min(t_single) * 1000, 1), "unit": "ms"},
        {"name": "QC pool workers' peak resident memory (largest worker)",
         "value": round(peak_mb, 1), "unit": "MB"},
    ]
    return {"name": "qc", "figures": figures}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2, help="QC pool processes (2 cores here)")
    ap.add_argument("--chunk", type=int, default=25, help="pages of the PDF per pool task")
    ap.add_argument("--distinct", type=int, default=12,
                    help="different page renderings, cycled (rendering is slow)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    return emit(run(args.pages, args.workers, args.chunk, args.distinct, args.rounds),
                args.json)


if __name__ == "__main__":
    main()
