"""OCR stage throughput against the `ocrmypdf` CLI on the same files with the same
parallelism, the split of cores between files, ocrmypdf jobs and Tesseract threads, and page
QC CPU time against OCR CPU time — all in one run.

    python -m bench.bench_ocr                       # 4 files x 2 pages, three splits
    python -m bench.bench_ocr --files 6 --pages 3 --json out.json

The stage is what the OCR app runs per file (streams.app_ocr.FileProcessor.ocr): SHA-256 of
every page, the input PDF built from the page images, ocrmypdf in a fresh spawn child with
OMP_THREAD_LIMIT, hOCR confidences, temp-name-and-rename output. Kafka is not in the loop
(it moves a few hundred bytes per file). The CLI runs `ocrmypdf -l vie+eng --rotate-pages
--output-type pdfa-2 -j J --sidecar` on the input PDFs the stage builds, C files at a time,
with the same OMP_THREAD_LIMIT. Runs alternate CLI / stage per split so drift in the
machine's load hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import emit
from sohoa.config import Settings
from sohoa.events import FileAssembled, OcrCompleted, PageRef
from streams.app_ocr import FileProcessor
from streams.ocr import build_input_pdf
from streams.qc import check_page
from streams.sources import PageSources

SPLITS = [(1, 2, 1), (2, 1, 1), (1, 1, 2)]  # (files at once, ocrmypdf jobs, tesseract threads)


def make_files(root: Path, n_files: int, pages: int) -> list[FileAssembled]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pages import PageSpec, text_lines, write_page

    out = []
    for f in range(n_files):
        code = f"HS-B{f:03d}"
        refs = []
        for p in range(1, pages + 1):
            spec = PageSpec(skew_deg=0.6 * ((f + p) % 3 - 1), noise=0.003, seed=f * 100 + p,
                            text=text_lines(12, f * 3 + p))
            path = write_page(root / "pages" / code / f"{p:03d}.png", spec)
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            refs.append(PageRef(document=path.name, number=p, uri=path.resolve().as_uri(),
                                document_sha256=sha, sha256=sha, media_type="image/png"))
        out.append(FileAssembled(site_id="bench", fonds="UBND", file_code=code, pages=refs))
    return out


def pages_root(files: list[FileAssembled]) -> Path:
    """The folder holding every page (the bench site's only source root)."""
    from urllib.parse import unquote, urlsplit

    return Path(unquote(urlsplit(files[0].pages[0].uri).path)).parents[1]


def bench_sources(files: list[FileAssembled]) -> PageSources:
    return PageSources({"bench": [str(pages_root(files))]}, [], 1 << 30, 120.0)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cli(inputs: list[Path], out: Path, conc: int, jobs: int, threads: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_THREAD_LIMIT": str(threads)}

    def one(src: Path) -> None:
        subprocess.run([sys.executable, "-m", "ocrmypdf", "-q", "-l", "vie+eng",
                        "--rotate-pages", "--output-type", "pdfa-2", "-j", str(jobs),
                        "--sidecar", str(out / f"{src.stem}.txt"),
                        str(src), str(out / f"{src.stem}.pdf")], env=env, check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, inputs))
    return time.perf_counter() - t0


def run_stage(files: list[FileAssembled], out: Path, data: Path, conc: int, jobs: int,
              threads: int) -> tuple[float, float]:
    settings = Settings()
    settings.ocr.output_dir = out
    settings.ocr.concurrency = conc
    settings.ocr.jobs_per_file = jobs
    settings.ocr.tesseract_threads = threads
    settings.streams.data_dir = data
    settings.streams.ocr_app_id = f"bench-{conc}{jobs}{threads}"
    settings.sources.default_roots = [str(pages_root(files))]

    async def main() -> float:
        async def publish(_ev) -> None:
            return None

        proc = FileProcessor(settings, publish)
        proc.clean_scratch()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(proc.ocr(fa) for fa in files))
        dt = time.perf_counter() - t0
        proc.close()
        bad = [r for r in results if not isinstance(r, OcrCompleted)]
        if bad:
            raise RuntimeError(f"OCR failed: {bad[0]}")
        return dt

    cpu0 = children_cpu()
    dt = asyncio.run(main())
    return dt, children_cpu() - cpu0


def qc_cpu(files: list[FileAssembled]) -> tuple[float, int]:
    cfg = Settings().qc.model_dump(mode="json")
    sources = bench_sources(files)
    t0 = time.process_time()
    n = 0
    for fa in files:
        for p in fa.pages:
            res = check_page(p.uri, p.sha256, cfg, fa.site_id, sources)
            assert res["decoded"], res
            n += 1
    return time.process_time() - t0, n


def run(n_files: int, pages: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="sohoa-bench-ocr-"))
    files = make_files(root, n_files, pages)
    inputs = []
    for fa in files:
        dest = root / "inputs" / f"{fa.file_code}.pdf"
        dest.parent.mkdir(parents=True, exist_ok=True)
        build_input_pdf([{"document": p.document, "page_index": p.page_index, "uri": p.uri,
                          "document_sha256": p.document_sha256, "sha256": p.sha256}
                         for p in fa.pages], dest, fa.site_id, bench_sources(files))
        inputs.append(dest)
    total_pages = n_files * pages
    splits = []
    stage_cpu_per_page = []
    for i, (c, j, t) in enumerate(SPLITS):
        order = ("cli", "stage") if i % 2 == 0 else ("stage", "cli")
        res: dict = {"files_at_once": c, "ocrmypdf_jobs": j, "tesseract_threads": t}
        for which in order:
            if which == "cli":
                cpu0 = children_cpu()
                res["cli_s"] = round(run_cli(inputs, root / f"cli-{i}", c, j, t), 2)
                res["cli_cpu_s"] = round(children_cpu() - cpu0, 2)
            else:
                dt, cpu = run_stage(files, root / f"stage-{i}", root / "faust", c, j, t)
                res["stage_s"], res["stage_cpu_s"] = round(dt, 2), round(cpu, 2)
                stage_cpu_per_page.append(cpu / total_pages)
        res["cli_pages_per_s"] = round(total_pages / res["cli_s"], 3)
        res["stage_pages_per_s"] = round(total_pages / res["stage_s"], 3)
        res["stage_vs_cli"] = round(res["cli_s"] / res["stage_s"], 3)
        # CPU time is steadier than wall time on a machine others are loading too.
        res["stage_vs_cli_cpu"] = round(res["cli_cpu_s"] / res["stage_cpu_s"], 3)
        res["load_average_1m"] = round(os.getloadavg()[0], 2)
        splits.append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
    qc_s, qc_pages = qc_cpu(files)
    best = max(splits, key=lambda r: r["stage_pages_per_s"])
    ocr_cpu_page = min(stage_cpu_per_page)
    return {
        "benchmark": "ocr_stage",
        "files": n_files, "pages_per_file": pages, "cores": os.cpu_count(),
        "splits": splits,
        "best_split": {k: best[k] for k in ("files_at_once", "ocrmypdf_jobs",
                                            "tesseract_threads")},
        "stage_vs_cli_at_best_split": best["stage_vs_cli"],
        "stage_vs_cli_mean": round(sum(r["stage_vs_cli"] for r in splits) / len(splits), 3),
        "goal_stage_vs_cli": 0.95,
        "qc_cpu_s_per_page": round(qc_s / qc_pages, 4),
        "ocr_cpu_s_per_page": round(ocr_cpu_page, 3),
        "qc_vs_ocr_cpu": round(qc_s / qc_pages / ocr_cpu_page, 4),
        "goal_qc_vs_ocr_cpu": 0.10,
        "note": "pages: A4 200 dpi RGB PNG, 12 Vietnamese lines, skew and noise; CPU = "
                "user+sys of child processes (ocrmypdf, Tesseract, Ghostscript)",
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--pages", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    result = run(args.files, args.pages)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
