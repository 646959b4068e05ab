"""OCR of one assembled file into one searchable PDF/A-2b plus a UTF-8 text sidecar.

The job runs in a long-lived engine process (``streams.ocr_pool``), page by page: each page's
original image goes to Tesseract as it is (no image -> PDF -> raster round trip); its hOCR
becomes an invisible text layer (ocrmypdf's renderer), grafted onto the original page, and
the whole is declared PDF/A-2b with pikepdf (``streams.ocr_pdf``). Orientation detection
runs only on pages that need it.

A job (:class:`OcrJob`) has one :class:`OcrPage` per page in file order, with ``languages``
(e.g. ``"vie+eng"``) where the file's manifest names the document's; else the job's
(:class:`OcrOptions`). The job goes to the engine process and its result (:class:`OcrDone`
or :class:`OcrFailure`) comes back by pickle: plain frozen dataclasses. Each document is
read once, through the site's sources (``streams.sources``: confined to the site's roots,
size-capped, timed) and proven by its SHA-256; each page is then proven by its content
digest (``sohoa.documents``) before it is OCR'd.

Output paths derive from site/fonds/file/revision; everything is written to a temp name in the
same directory and renamed, so a retry, a kill -9 or a replay never leaves a half file or a
second copy. A ``.json`` result written last (also by rename) marks the job complete; a
replayed job whose inputs are unchanged reuses it instead of OCR-ing again. Outputs are
0640: archive text is not for every local user.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from sohoa.disk import disk_full
from sohoa.documents import DocumentRejected
from sohoa.hashing import file_sha256
from streams.qc import PageUnreadable, plain, read_verified
from streams.sources import PageSources

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Tesseract language names ("vie", "chi_sim", "script/Latin") joined by "+": nothing that
# could name a file outside Tesseract's data folder.
_LANGUAGES = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)?"
                        r"(\+[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)?)*")
# Part of every job's inputs digest: outputs of another engine are not reused on replay.
ENGINE = "tesseract-capi/1"
OUTPUT_MODE = 0o640
# Temp outputs this process is writing: an engine whose worker died removes them on its way
# out (streams.ocr_pool), before the restarted worker looks for leftovers.
WRITING: set[Path] = set()


class OcrInputError(Exception):
    """The input itself is at fault (retrying will not help); ``str(exc)`` is the reason."""


@dataclass(frozen=True)
class OcrPage:
    """One page of a job: where its document is, and the digests that prove both."""

    document: str
    page_index: int
    uri: str
    document_sha256: str
    sha256: str
    media_type: str | None = None
    languages: str | None = None  # the document's own, from the manifest; else the job's

    @property
    def label(self) -> str:
        return f"{self.document} page {self.page_index}"


@dataclass(frozen=True)
class OcrOptions:
    """How a job is OCR'd; all of it is part of the job's inputs digest."""

    engine: str
    languages: str
    output_type: str
    rotate_pages: bool
    osd_below_confidence: float
    denoise: bool


@dataclass(frozen=True)
class OcrJob:
    """Everything an engine process needs for one file, and where its outputs go."""

    pages: list[OcrPage]
    options: OcrOptions
    inputs_digest: str
    site_id: str
    sources: PageSources
    title: str
    pdf: str
    text: str
    result: str
    work_dir: str
    parent_pid: int | None = None  # set by the engine pool: the worker that asked


@dataclass(frozen=True)
class OcrPageText:
    """What OCR found on one page (the ``pages`` of the ``.json`` result)."""

    document: str
    page_index: int
    chars: int
    mean_confidence: float | None
    turned: int


@dataclass(frozen=True)
class OcrDone:
    """A finished job, as its ``.json`` result says (written last, read back on replay)."""

    output_sha256: str
    pages: list[OcrPageText]
    inputs_digest: str
    seconds: float = 0.0
    ok: Literal[True] = True

    def to_json(self) -> bytes:
        return json.dumps({"ok": True, "output_sha256": self.output_sha256,
                           "pages": [asdict(p) for p in self.pages],
                           "seconds": self.seconds,
                           "inputs_digest": self.inputs_digest}).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OcrDone:
        """A result as written by :meth:`to_json`; raises KeyError, TypeError or ValueError
        on one that is not."""
        return cls(output_sha256=data["output_sha256"], inputs_digest=data["inputs_digest"],
                   seconds=data.get("seconds", 0.0),
                   pages=[OcrPageText(document=p["document"],
                                      page_index=p.get("page_index", 1),
                                      chars=p["chars"],
                                      mean_confidence=p.get("mean_confidence"),
                                      turned=p.get("turned", 0))
                          for p in data["pages"]])


FailureKind = Literal["input", "transient", "disk_full", "timeout"]


@dataclass(frozen=True)
class OcrFailure:
    """A job that did not finish: ``input`` is the file's fault (retrying will not help);
    ``transient``, ``disk_full`` and ``timeout`` are ours."""

    kind: FailureKind
    reason: str
    ok: Literal[False] = False


OcrResult = OcrDone | OcrFailure


@dataclass(frozen=True)
class OcrPaths:
    pdf: Path
    text: Path
    result: Path

    @classmethod
    def for_file(cls, output_dir: Path, site_id: str, fonds: str, file_code: str,
                 revision: int) -> OcrPaths:
        base = Path(output_dir) / safe_name(site_id) / safe_name(fonds or "_") / safe_name(
            file_code)
        stem = f"r{revision}"
        return cls(base / f"{stem}.pdf", base / f"{stem}.txt", base / f"{stem}.json")


def safe_name(part: str) -> str:
    """A path component from a code: readable, no separators, no '..', and distinct codes
    stay distinct (a short hash is added when characters had to be replaced)."""
    clean = _SAFE.sub("_", part).strip("._") or "_"
    if clean != part:
        clean = f"{clean[:80]}-{hashlib.sha256(part.encode()).hexdigest()[:8]}"
    return clean[:120]


def inputs_digest(pages: list[OcrPage], options: OcrOptions) -> str:
    h = hashlib.sha256()
    for p in pages:
        ident = {"document": p.document, "page_index": p.page_index,
                 "document_sha256": p.document_sha256, "languages": p.languages}
        h.update(f"{json.dumps(ident, sort_keys=True)}:{p.sha256}\n".encode())
    h.update(json.dumps(asdict(options), sort_keys=True).encode())
    return h.hexdigest()


def load_done(paths: OcrPaths, digest: str) -> OcrDone | None:
    """The result of an earlier, complete run on the same inputs, if its files are intact."""
    try:
        result = json.loads(paths.result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if result.get("inputs_digest") != digest or not paths.pdf.exists():
        return None
    if file_sha256(paths.pdf) != result.get("output_sha256"):
        return None
    return OcrDone.from_json(result)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, OUTPUT_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_name(final: str, pid: int | None = None) -> str:
    """``.<final>.<host>.<pid>.tmp``: hidden, and attributable to the process writing it, so a
    restarted worker removes only the leftovers of dead processes on its own host."""
    return f".{final}.{socket.gethostname()}.{pid or os.getpid()}.tmp"


def failure(kind: FailureKind, reason: str) -> OcrFailure:
    return OcrFailure(kind, reason[:500])


# --- in the engine process ---------------------------------------------------------------

class Engines:
    """The Tesseract engines of one process, by language set (a few kept loaded), and the
    orientation engine, loaded the first time a page needs it."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self._by_lang: OrderedDict[str, Any] = OrderedDict()
        self._osd: Any = None

    def get(self, languages: str) -> Any:
        from streams.tesseract import Engine, TesseractError

        eng = self._by_lang.pop(languages, None)
        if eng is None:
            if not _LANGUAGES.fullmatch(languages):
                raise OcrInputError(f"not a Tesseract language set: {languages[:40]!r}")
            try:
                eng = Engine(languages)
            except TesseractError as exc:
                raise OcrInputError(str(exc)) from None
            while len(self._by_lang) >= self.keep:
                self._by_lang.popitem(last=False)[1].close()
        self._by_lang[languages] = eng
        return eng

    def osd(self) -> Any:
        from streams.tesseract import Engine

        if self._osd is None:
            self._osd = Engine("osd")
        return self._osd

    def close(self) -> None:
        for eng in self._by_lang.values():
            eng.close()
        self._by_lang.clear()
        if self._osd is not None:
            self._osd.close()
            self._osd = None


def _documents(pages: list[OcrPage]) -> Iterator[list[OcrPage]]:
    """Runs of consecutive job pages of one document (a file's pages come document by
    document), so each document is read once."""
    run: list[OcrPage] = []
    for p in pages:
        if run and (p.uri, p.document_sha256) != (run[0].uri, run[0].document_sha256):
            yield run
            run = []
        run.append(p)
    if run:
        yield run


def _ocr_image(source: Any, i: int, options: OcrOptions) -> Any:
    """The image Tesseract reads: the page's own or, with ``options.denoise``, its grey
    smoothed 3x3 (isolated specks then fall under the binarisation threshold instead of
    being read as '.', '_' or '|'; bench/bench_ocr.py measures the text it gives)."""
    pix = source.pix(i)
    if not options.denoise:
        return pix
    with pix:
        return pix.smoothed()


def _open(run: list[OcrPage], job: OcrJob) -> Any:
    """The run's document, read within the site's sources and proven by its SHA-256."""
    from streams.page_source import open_source

    first = run[0]
    try:
        data = read_verified(first.uri, first.document_sha256, job.site_id, job.sources)
        return open_source(data, first.media_type)
    except PageUnreadable as exc:
        raise OcrInputError(f"{first.label}: {exc}") from None
    except DocumentRejected as exc:
        raise OcrInputError(f"{first.label}: {plain(exc)}") from None


def _parse_hocr(path: Path, hocr: str) -> Any:
    """ocrmypdf's page tree of one page's hOCR (None when Tesseract gave none)."""
    from ocrmypdf.hocrtransform import HocrParseError, HocrParser

    if not hocr.strip():
        return None
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<html><body>{hocr}</body></html>',
                    encoding="utf-8")
    try:
        return HocrParser(path).parse()
    except HocrParseError:
        return None


def recognise_upright(engines: Engines, engine: Any, pix: Any,
                      options: OcrOptions) -> tuple[Any, int, int | None]:
    """OCR a page; orientation detection only for a page whose text came out sideways or
    poorly (upside down). Returns (result, the turn of the image Tesseract's last result is
    for, the page's display rotation or None to keep the page's own). The engine holds the
    returned result (for its hOCR)."""
    rec = engine.recognise(pix)
    conf = rec.mean_confidence
    low = conf is None or conf < options.osd_below_confidence
    if not options.rotate_pages or not (rec.sideways or low) or not rec.word_confidences:
        return rec, 0, None
    found = engines.osd().orientation(pix)
    if found is None or found.degrees == 0:
        return rec, 0, None
    with pix.rotated(found.degrees // 90) as turned:
        again = engine.recognise(turned)
    # Sideways lines are read about as well as upright ones, but only upright lines make a
    # text layer that follows the words; upside down, the better reading wins.
    margin = 5.0 if rec.sideways else 0.0
    if (again.mean_confidence or 0) > (conf or 0) - margin:
        return again, found.degrees, found.degrees
    return engine.recognise(pix), 0, None  # the turn did not help: back to the page as it was


def ocr_file(job: OcrJob, engines: Engines,
             progress: Callable[[int, int], None]) -> OcrResult:
    """The whole job, in the engine process. Returns its result; never raises."""
    work = Path(job.work_dir)
    started = time.monotonic()
    final = Path(job.pdf)
    tmp_pdf = final.with_name(temp_name(final.name))
    sources: list[Any] = []
    WRITING.add(tmp_pdf)
    try:
        work.mkdir(parents=True, exist_ok=True)
        return _ocr_file(job, engines, progress, work, tmp_pdf, sources, started)
    except OcrInputError as exc:
        return failure("input", str(exc))
    except MemoryError:
        return failure("transient", "out of memory")
    except Exception as exc:
        if disk_full(exc):
            return failure("disk_full", f"no space left on the OCR output or work disk: {exc}")
        return failure("transient", f"{type(exc).__name__}: {exc}")
    finally:
        for s in sources:
            s.close()
        tmp_pdf.unlink(missing_ok=True)
        WRITING.discard(tmp_pdf)
        shutil.rmtree(work, ignore_errors=True)


def _ocr_file(job: OcrJob, engines: Engines, progress: Callable[[int, int], None],
              work: Path, tmp_pdf: Path, sources: list[Any], started: float) -> OcrDone:
    import pikepdf

    from streams import ocr_pdf
    from streams.tesseract import TesseractError, quiet_stderr

    opts = job.options
    paths = OcrPaths(Path(job.pdf), Path(job.text), Path(job.result))
    out = pikepdf.new()
    layers: list[tuple[int, Any, float]] = []   # (output page, hOCR page tree, dpi)
    per_page: list[OcrPageText] = []
    texts: list[str] = []
    turns: list[int] = []
    total = len(job.pages)
    for run in _documents(job.pages):
        source = _open(run, job)
        sources.append(source)
        for p in run:
            i = int(p.page_index)
            engine = engines.get(p.languages or opts.languages)
            try:
                source.check(i, p.sha256, proven=p.document_sha256)
                with _ocr_image(source, i, opts) as pix, quiet_stderr():
                    rec, turn, display = recognise_upright(engines, engine, pix, opts)
                    hocr = engine.hocr()
                page = source.append_page(out, i)
            except TesseractError as exc:
                raise OcrInputError(f"{p.label}: {exc}") from None
            except DocumentRejected as exc:
                raise OcrInputError(f"{p.label}: {plain(exc)}") from None
            n = len(per_page)
            tree = _parse_hocr(work / f"p{n:05d}.hocr", hocr)
            if tree is not None and tree.bbox is not None:
                layers.append((n, tree, float(tree.dpi or 300)))
            if display is not None:
                page.obj.Rotate = display
            turns.append(turn)
            texts.append(rec.text)
            per_page.append(OcrPageText(
                document=p.document, page_index=p.page_index,
                chars=len("".join(rec.text.split())), mean_confidence=rec.mean_confidence,
                turned=turn or display or 0))
            progress(len(per_page), total)
        source.release()
    if not per_page:
        raise OcrInputError("no pages")
    pdfa = opts.output_type.startswith("pdfa")
    if layers:
        ocr_pdf.render_text_pages(layers, work / "text.pdf")
        with pikepdf.open(work / "text.pdf") as text_pdf:
            if len(text_pdf.pages) != len(layers):
                raise RuntimeError(f"text layer has {len(text_pdf.pages)} pages for "
                                   f"{len(layers)}")
            for (n, _, _), text_page in zip(layers, text_pdf.pages, strict=True):
                ocr_pdf.graft_text_layer(out, out.pages[n], text_page, turns[n])
    cmyk: dict[str, Any] = {}
    for page in out.pages if pdfa else ():
        ocr_pdf.use_cmyk_profile(out, page, cmyk)
    paths.pdf.parent.mkdir(parents=True, exist_ok=True)
    ocr_pdf.save(out, tmp_pdf, pdfa, job.title)
    os.chmod(tmp_pdf, OUTPUT_MODE)
    output_sha = file_sha256(tmp_pdf)
    text = "\f".join(texts)
    _atomic_write(paths.text, text.encode("utf-8"))
    if job.parent_pid is not None and os.getppid() != job.parent_pid:
        raise RuntimeError("the worker that asked for this OCR is gone")  # a new one redoes it
    os.replace(tmp_pdf, paths.pdf)
    result = OcrDone(output_sha256=output_sha, pages=per_page,
                     seconds=round(time.monotonic() - started, 3),
                     inputs_digest=job.inputs_digest)
    _atomic_write(paths.result, result.to_json())
    return result
