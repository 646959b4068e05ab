"""The OCR stage against its floor and against ocrmypdf, on the same generated pages, in one
run: CPU seconds per page of the stage and of `tesseract IMG out -l vie pdf`, their ratio; wall
time of the stage and of the `ocrmypdf` CLI with the same number of files at once; the
character error rate of each text layer against the text the pages were rendered from; how
many outputs pass veraPDF (PDF/A-2b).

    python -m bench.bench_ocr                          # 8 files x 3 pages, 2 rounds
    python -m bench.bench_ocr --files 4 --pages 2 --rounds 1 --json out.json

Pages: A4 Vietnamese administrative text, 12 lines, colour, 300 dpi, slight skew and noise,
written as a scanner would (JPEG q90, PNG, TIFF LZW in turn). Every command runs with
OMP_THREAD_LIMIT=1 (Tesseract's own threads only burn CPU, docs/scaling.md).

- stage: what the OCR app runs per file (``FileProcessor.ocr``), with its long-lived engine
  processes already started (warm-up file first, as in a worker that has run for a while).
  CPU = the engines' user+sys (from /proc) + this process's own, over the measured files.
- tesseract: `tesseract PAGE out -l vie pdf`, one process per page (user+sys of the child).
- ocrmypdf: `ocrmypdf -l vie --rotate-pages --output-type pdfa-2 -j 1 --sidecar` on each
  file's pages as one image PDF (built beforehand, not timed), C files at once.
The three run in turn within a round, the order rotated between rounds, so drift in the
machine's load hits each; figures are per round and their median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import emit
from sohoa.config import Settings
from sohoa.documents import inspect_document
from sohoa.events import FileAssembled, OcrCompleted, PageRef
from streams.app_ocr import FileProcessor

FORMATS = ("jpg", "png", "tif")
ENV = {**os.environ, "OMP_THREAD_LIMIT": "1"}


def make_files(root: Path, n_files: int, pages: int, dpi: int) -> tuple[list[FileAssembled],
                                                                       dict[str, list[str]]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.pages import PageSpec, text_lines, write_page

    files, truth = [], {}
    for f in range(n_files):
        code = f"HS-B{f:03d}"
        refs, texts = [], []
        for p in range(1, pages + 1):
            k = f * pages + p
            spec = PageSpec(dpi=dpi, skew_deg=0.4 * (k % 3 - 1), noise=0.002, seed=k,
                            text=text_lines(12, k))
            ext = FORMATS[k % len(FORMATS)]
            kw = {"quality": 90} if ext == "jpg" else {}
            path = write_page(root / "pages" / code / f"{p:03d}.{ext}", spec, **kw)
            with path.open("rb") as fh:  # counted and digested as the site agent does
                facts = inspect_document(fh, path.stat().st_size)
            refs.append(PageRef(document=path.name, number=p, uri=path.resolve().as_uri(),
                                document_sha256=facts.sha256, sha256=facts.page_sha256[0],
                                media_type=facts.media_type))
            texts.append("\n".join(spec.text))
        files.append(FileAssembled(site_id="bench", fonds="UBND", file_code=code, pages=refs))
        truth[code] = texts
    return files, truth


def page_paths(fa: FileAssembled) -> list[Path]:
    from urllib.parse import unquote, urlsplit

    return [Path(unquote(urlsplit(p.uri).path)) for p in fa.pages]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> float:
    """user+sys seconds of a live process (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_pids(engines: list) -> list[int]:
    """The process ids of started OCR engines (a Process has no pid before it starts)."""
    return [pid for e in engines if (pid := e.proc.pid) is not None]


# --- the three contenders -------------------------------------------------------------------

def run_tesseract(files: list[FileAssembled], out: Path) -> tuple[float, float]:
    out.mkdir(parents=True, exist_ok=True)
    cpu0, t0 = children_cpu(), time.perf_counter()
    for fa in files:
        for i, page in enumerate(page_paths(fa), 1):
            subprocess.run(["tesseract", str(page), str(out / f"{fa.file_code}-{i}"), "-l", "vie",
                            "pdf"], env=ENV, check=True, capture_output=True)
    return time.perf_counter() - t0, children_cpu() - cpu0


def run_ocrmypdf(inputs: dict[str, Path], out: Path, conc: int) -> tuple[float, float]:
    out.mkdir(parents=True, exist_ok=True)

    def one(code: str) -> None:
        subprocess.run([sys.executable, "-m", "ocrmypdf", "-q", "-l", "vie", "--rotate-pages",
                        "--output-type", "pdfa-2", "-j", "1",
                        "--sidecar", str(out / f"{code}.txt"),
                        str(inputs[code]), str(out / f"{code}.pdf")], env=ENV, check=True)

    cpu0, t0 = children_cpu(), time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, inputs))
    return time.perf_counter() - t0, children_cpu() - cpu0


class Stage:
    """The OCR app's FileProcessor with warm engines, measured file batch by file batch."""

    def __init__(self, root: Path, conc: int, warmup: FileAssembled) -> None:
        s = Settings()
        s.ocr.output_dir = root / "stage-warmup"
        s.ocr.concurrency = conc
        s.ocr.tesseract_threads = 1
        s.streams.data_dir = root / "faust"
        s.streams.ocr_app_id = "bench-ocr"
        s.sources.default_roots = [str(root)]  # the bench site's pages, and nothing else
        self.settings = s
        self.loop = asyncio.new_event_loop()

        async def publish(_ev) -> None:
            return None

        self.proc = FileProcessor(s, publish)
        self.proc.clean_scratch()
        # Start every engine (one warm-up file each) so start-up is out of the figures.
        self._ocr([warmup.model_copy(update={"file_code": f"WARM-{i}"}) for i in range(conc)])

    def _ocr(self, files: list[FileAssembled]) -> list:
        async def main() -> list:
            return list(await asyncio.gather(*(self.proc.ocr(fa) for fa in files)))

        results = self.loop.run_until_complete(main())
        bad = [r for r in results if not isinstance(r, OcrCompleted)]
        if bad:
            raise RuntimeError(f"OCR failed: {bad[0]}")
        return results

    def run(self, files: list[FileAssembled], out: Path) -> tuple[float, float, list[Path]]:
        self.settings.ocr.output_dir = out
        pool = self.proc.engine_pool()
        pids = engine_pids(pool._idle)
        cpu0 = sum(proc_cpu(p) for p in pids) + self_cpu()
        t0 = time.perf_counter()
        results = self._ocr(files)
        dt = time.perf_counter() - t0
        if sorted(engine_pids(pool._idle)) != sorted(pids):
            raise RuntimeError("an engine was replaced during the run: CPU not comparable")
        cpu = sum(proc_cpu(p) for p in pids) + self_cpu() - cpu0
        from urllib.parse import unquote, urlsplit

        return dt, cpu, [Path(unquote(urlsplit(r.output_uri).path)) for r in results]

    def close(self) -> None:
        self.proc.close()
        self.loop.close()


# --- judging the outputs --------------------------------------------------------------------

def layer_text(pdf: Path, page: int) -> str:
    return subprocess.run(["pdftotext", "-raw", "-f", str(page), "-l", str(page), str(pdf), "-"],
                          capture_output=True, text=True, check=True).stdout


def cer_total(pairs: list[tuple[str, str]]) -> float:
    """Character error rate over all pages: total edits / total reference characters."""
    from tests.support.ocr_helpers import cer

    edits = chars = 0
    for ref, hyp in pairs:
        n = len(" ".join(ref.split()))
        edits += round(cer(ref, hyp) * n)
        chars += n
    return edits / max(1, chars)


def judge(files: list[FileAssembled], truth: dict[str, list[str]], stage_pdfs: list[Path],
          cli_dir: Path, tess_dir: Path) -> dict:
    from infra.verapdf import validate

    stage, cli, tess = [], [], []
    for fa, pdf in zip(files, stage_pdfs, strict=True):
        for i, ref in enumerate(truth[fa.file_code], 1):
            stage.append((ref, layer_text(pdf, i)))
            cli.append((ref, layer_text(cli_dir / f"{fa.file_code}.pdf", i)))
            tess.append((ref, layer_text(tess_dir / f"{fa.file_code}-{i}.pdf", 1)))
    cli_pdfs = [cli_dir / f"{fa.file_code}.pdf" for fa in files]
    verdicts = validate(stage_pdfs + cli_pdfs, "2b")
    stage_v, cli_v = verdicts[:len(stage_pdfs)], verdicts[len(stage_pdfs):]
    return {
        "cer_pct": {"stage": round(100 * cer_total(stage), 3),
                    "ocrmypdf": round(100 * cer_total(cli), 3),
                    "tesseract": round(100 * cer_total(tess), 3)},
        "verapdf_pass": {"stage": f"{sum(v.compliant for v in stage_v)}/{len(stage_v)}",
                         "ocrmypdf": f"{sum(v.compliant for v in cli_v)}/{len(cli_v)}"},
        "verapdf_failures": [v.summary() for v in verdicts if not v.compliant][:5],
    }


def run(n_files: int, pages: int, rounds: int, conc: int, dpi: int) -> dict:
    import img2pdf

    root = Path(tempfile.mkdtemp(prefix="sohoa-bench-ocr-"))
    files, truth = make_files(root, n_files, pages, dpi)
    warm, _ = make_files(root / "warm", 1, 1, dpi)
    inputs = {}
    for fa in files:
        dest = root / "inputs" / f"{fa.file_code}.pdf"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(img2pdf.convert([str(p) for p in page_paths(fa)]))
        inputs[fa.file_code] = dest
    total = n_files * pages
    stage = Stage(root, conc, warm[0])
    rows = []
    try:
        for r in range(rounds):
            order = ["tesseract", "stage", "ocrmypdf"]
            order = order[r % 3:] + order[:r % 3]
            row: dict = {"round": r + 1, "order": order}
            for which in order:
                d = root / f"r{r}-{which}"
                if which == "tesseract":
                    wall, cpu = run_tesseract(files, d)
                elif which == "stage":
                    wall, cpu, stage_pdfs = stage.run(files, d)
                else:
                    wall, cpu = run_ocrmypdf(inputs, d, conc)
                row[which] = {"wall_s": round(wall, 2), "cpu_s_per_page": round(cpu / total, 3)}
            row["stage_vs_tesseract_cpu"] = round(
                row["stage"]["cpu_s_per_page"] / row["tesseract"]["cpu_s_per_page"], 3)
            row["ocrmypdf_vs_tesseract_cpu"] = round(
                row["ocrmypdf"]["cpu_s_per_page"] / row["tesseract"]["cpu_s_per_page"], 3)
            row["stage_vs_ocrmypdf_wall"] = round(
                row["stage"]["wall_s"] / row["ocrmypdf"]["wall_s"], 3)
            row["load_average_1m"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        quality = judge(files, truth, stage_pdfs, root / f"r{rounds - 1}-ocrmypdf",
                        root / f"r{rounds - 1}-tesseract")
    finally:
        stage.close()

    def med(key: str, sub: str | None = None) -> float:
        return round(statistics.median(r[key][sub] if sub else r[key] for r in rows), 3)

    return {
        "benchmark": "ocr_stage",
        "files": n_files, "pages_per_file": pages, "pages": total, "dpi": dpi,
        "files_at_once": conc, "cores": os.cpu_count(), "rounds": rows,
        "median": {
            "stage_cpu_s_per_page": med("stage", "cpu_s_per_page"),
            "tesseract_cpu_s_per_page": med("tesseract", "cpu_s_per_page"),
            "ocrmypdf_cpu_s_per_page": med("ocrmypdf", "cpu_s_per_page"),
            "stage_vs_tesseract_cpu": med("stage_vs_tesseract_cpu"),
            "ocrmypdf_vs_tesseract_cpu": med("ocrmypdf_vs_tesseract_cpu"),
            "stage_wall_s": med("stage", "wall_s"),
            "ocrmypdf_wall_s": med("ocrmypdf", "wall_s"),
            "stage_vs_ocrmypdf_wall": med("stage_vs_ocrmypdf_wall"),
        },
        "goal_stage_vs_tesseract_cpu": 1.3, "moonshot_stage_vs_tesseract_cpu": 1.1,
        **quality,
        "goal_cer_pct_over_ocrmypdf": 0.05,
        "note": "CPU = user+sys; CER of the PDF text layer (pdftotext -raw) against the "
                "rendered text, whitespace collapsed, over all pages; quality from the last "
                "round's outputs",
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--pages", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 2,
                    help="files at once, for the stage and for ocrmypdf")
    ap.add_argument("--dpi", type=int, default=300)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    result = run(args.files, args.pages, args.rounds, args.concurrency, args.dpi)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
