"""OCR of one assembled file into one searchable PDF/A-2b plus a UTF-8 text sidecar.

``ocrmypdf.ocr()`` is not thread-safe and its memory grows across runs, so every job runs in
a fresh ``spawn`` child process (:func:`run_job`) that the parent can kill on timeout.
Tesseract's own threads are capped (``OMP_THREAD_LIMIT``) so that
``concurrency x jobs_per_file x tesseract_threads`` matches the cores.

Output paths derive from site/fonds/file/revision; everything is written to a temp name in the
same directory and renamed, so a retry, a kill -9 or a replay never leaves a half file or a
second copy. A ``.json`` result written last (also by rename) marks the job complete; a
replayed job whose inputs are unchanged reuses it instead of OCR-ing again.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sohoa.disk import disk_full
from streams.qc import PageUnreadable, read_verified
from streams.sources import PageSources

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OcrInputError(Exception):
    """The input itself is at fault (retrying will not help); ``str(exc)`` is the reason."""


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


def inputs_digest(pages: list[dict[str, Any]], options: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for p in pages:
        h.update(f"{p['document']}\x1f{p['page_index']}:{p['sha256']}\n".encode())
    h.update(json.dumps(options, sort_keys=True).encode())
    return h.hexdigest()


def load_done(paths: OcrPaths, digest: str) -> dict[str, Any] | None:
    """The result of an earlier, complete run on the same inputs, if its files are intact."""
    try:
        result = json.loads(paths.result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if result.get("inputs_digest") != digest or not paths.pdf.exists():
        return None
    if _sha256_file(paths.pdf) != result.get("output_sha256"):
        return None
    return result


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the output from its readers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- in the child process ----------------------------------------------------------------

def build_input_pdf(pages: list[dict[str, Any]], dest: Path, site_id: str,
                    sources: PageSources) -> list[tuple[str, int]]:
    """One PDF of all pages in order; each document's bytes read within the site's sources and
    verified against its SHA-256. Returns the (document, page_index) of each PDF page."""
    import img2pdf
    import pikepdf

    out = pikepdf.new()
    keys: list[tuple[str, int]] = []
    cache: dict[tuple[str, str], bytes] = {}
    for p in pages:
        label = f"{p['document']} page {p['page_index']}"
        where = (p["uri"], p["document_sha256"])
        data = cache.get(where)
        if data is None:
            try:
                data = read_verified(p["uri"], p["document_sha256"], site_id, sources)
            except PageUnreadable as exc:
                raise OcrInputError(f"{label}: {exc}") from None
            cache.clear()  # one document at a time: pages come in document order
            cache[where] = data
        index = int(p["page_index"])
        if data[:5] == b"%PDF-":
            try:
                src = pikepdf.open(io.BytesIO(data))
            except pikepdf.PasswordError:
                raise OcrInputError(f"{label}: encrypted PDF") from None
            except pikepdf.PdfError as exc:
                raise OcrInputError(f"{label}: corrupt PDF: {exc}") from None
            if index > len(src.pages):
                raise OcrInputError(f"{label}: the document has {len(src.pages)} pages")
            out.pages.append(src.pages[index - 1])
        else:
            frame = _frame(data, index, label)
            try:
                pdf_bytes = img2pdf.convert(frame, rotation=img2pdf.Rotation.ifvalid)
            except Exception:
                pdf_bytes = img2pdf.convert(_normalise_image(frame, label))
            out.pages.extend(pikepdf.open(io.BytesIO(pdf_bytes)).pages)
        keys.append((p["document"], index))
    out.save(dest)
    return keys


def _frame(data: bytes, index: int, label: str) -> bytes:
    """The bytes of one page of an image document: the file itself when it has one page,
    else that frame re-encoded losslessly (TIFF, same dpi)."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        frames = getattr(img, "n_frames", 1)
        if frames == 1 and index == 1:
            return data
        if index > frames:
            raise OcrInputError(f"{label}: the document has {frames} pages")
        img.seek(index - 1)
        buf = io.BytesIO()
        img.save(buf, "TIFF", dpi=img.info.get("dpi", (200, 200)), compression="tiff_lzw")
        return buf.getvalue()
    except OcrInputError:
        raise
    except Exception as exc:
        raise OcrInputError(f"{label}: undecodable image: {type(exc).__name__}") from None


def _normalise_image(data: bytes, label: str) -> bytes:
    """What img2pdf refuses (alpha, odd modes) becomes a plain RGB PNG at the same dpi."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        dpi = img.info.get("dpi", (200, 200))
        frames = []
        for i in range(getattr(img, "n_frames", 1)):
            img.seek(i)
            frame = img.convert("RGBA")
            paper = Image.new("RGBA", frame.size, (255, 255, 255, 255))
            frames.append(Image.alpha_composite(paper, frame).convert("RGB"))
    except Exception as exc:
        raise OcrInputError(f"{label}: undecodable image: {type(exc).__name__}") from None
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", dpi=dpi, compression="tiff_lzw", save_all=len(frames) > 1,
                   append_images=frames[1:])
    return buf.getvalue()


def _hocr_confidences(work: Path) -> dict[int, float | None]:
    """Mean word confidence per page (1-based) from Tesseract's hOCR in the work folder."""
    out: dict[int, float | None] = {}
    for hocr in sorted(work.rglob("*_ocr_hocr.hocr")):
        m = re.match(r"(\d+)_", hocr.name)
        if not m:
            continue
        text = hocr.read_text(encoding="utf-8", errors="replace")
        confs = [int(c) for c in re.findall(r"x_wconf (\d+)", text)]
        out[int(m.group(1))] = round(sum(confs) / len(confs), 2) if confs else None
    return out


def ocr_child(job: dict[str, Any]) -> dict[str, Any]:
    """Body of the child process. Returns a result dict; never raises."""
    work = Path(job["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(work)  # ocrmypdf's work folder (with the hOCR) goes here
    tempfile.tempdir = str(work)
    started = time.monotonic()
    try:
        import ocrmypdf
        from ocrmypdf import exceptions as ox

        src = work / "input.pdf"
        page_keys = build_input_pdf(job["pages"], src, job["site_id"], job["sources"])
        paths = OcrPaths(Path(job["pdf"]), Path(job["text"]), Path(job["result"]))
        paths.pdf.parent.mkdir(parents=True, exist_ok=True)
        tmp_pdf = paths.pdf.with_name(temp_name(paths.pdf.name))
        tmp_txt = work / "sidecar.txt"
        opts = job["options"]
        kw: dict[str, Any] = {
            "language": opts["languages"].split("+"), "output_type": opts["output_type"],
            "rotate_pages": opts["rotate_pages"], "deskew": opts["deskew"], "sidecar": tmp_txt,
            "jobs": opts["jobs"], "progress_bar": False, "keep_temporary_files": True,
        }
        try:
            try:
                ocrmypdf.ocr(src, tmp_pdf, **kw)
            except ox.PriorOcrFoundError:
                # A scanner that already put (its own) text on the page: ours replaces it.
                # (--skip-text is not usable with Ghostscript 10.0-10.02 for PDF/A.)
                ocrmypdf.ocr(src, tmp_pdf, force_ocr=True, **kw)
        except ox.EncryptedPdfError:
            return _fail("input", "encrypted PDF")
        except ox.InputFileError as exc:
            return _fail("input", f"input file error: {exc}")
        except ox.UnsupportedImageFormatError as exc:
            return _fail("input", f"unsupported image format: {exc}")
        except ox.DpiError as exc:
            return _fail("input", f"dpi error: {exc}")
        except ox.DigitalSignatureError:
            return _fail("input", "digitally signed PDF")
        except ox.TaggedPDFError:
            return _fail("input", "tagged PDF already has text")
        except ox.MissingDependencyError as exc:
            return _fail("internal", f"missing dependency: {exc}")
        except (ox.SubprocessOutputError, ox.ExitCodeException) as exc:
            if disk_full(exc):  # e.g. Ghostscript could not write its work files
                return _fail("disk_full", f"no space left on the OCR output or work disk: {exc}")
            if isinstance(exc, ox.SubprocessOutputError):
                return _fail("transient", f"ocr engine failed: {exc}")
            return _fail("transient", f"ocrmypdf {type(exc).__name__}: {exc}")
        text = tmp_txt.read_text(encoding="utf-8", errors="replace")
        texts = text.split("\f")
        confs = _hocr_confidences(work)
        per_page = []
        for i, (document, page_index) in enumerate(page_keys):
            t = texts[i] if i < len(texts) else ""
            per_page.append({"document": document, "page_index": page_index,
                             "chars": len("".join(t.split())),
                             "mean_confidence": confs.get(i + 1)})
        output_sha = _sha256_file(tmp_pdf)
        _atomic_write(paths.text, text.encode("utf-8"))
        os.replace(tmp_pdf, paths.pdf)
        result = {"ok": True, "output_sha256": output_sha, "pages": per_page,
                  "seconds": round(time.monotonic() - started, 3),
                  "inputs_digest": job["inputs_digest"]}
        _atomic_write(paths.result, json.dumps(result).encode())
        return result
    except OcrInputError as exc:
        return _fail("input", str(exc))
    except MemoryError:
        return _fail("transient", "out of memory")
    except Exception as exc:
        if disk_full(exc):
            return _fail("disk_full", f"no space left on the OCR output or work disk: {exc}")
        return _fail("transient", f"{type(exc).__name__}: {exc}")
    finally:
        stray = Path(job["pdf"]).with_name(temp_name(Path(job["pdf"]).name))
        stray.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


def temp_name(final: str, pid: int | None = None) -> str:
    """``.<final>.<host>.<pid>.tmp``: hidden, and attributable to the process writing it, so a
    restarted worker removes only the leftovers of dead processes on its own host."""
    return f".{final}.{socket.gethostname()}.{pid or os.getpid()}.tmp"


def _fail(kind: str, reason: str) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "reason": reason[:500]}


def _child_main(job: dict[str, Any], conn: Any) -> None:
    os.environ["OMP_THREAD_LIMIT"] = str(job["options"]["tesseract_threads"])
    try:
        conn.send(ocr_child(job))
    finally:
        conn.close()


def run_job(job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one OCR job in a fresh spawn child; kill it on timeout. Blocking: call it from a
    thread, never from the event loop."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(job, child), daemon=True,
                       name=f"sohoa-ocr-{Path(job['pdf']).parent.name}")
    proc.start()
    child.close()
    try:
        if parent.poll(timeout_s):
            try:
                result = parent.recv()
            except EOFError:
                result = None
        else:
            result = _fail("timeout", f"timeout after {timeout_s:.0f}s")
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        if result is None:
            result = _fail("transient", f"ocr process died (exit {proc.exitcode})")
        return result
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        shutil.rmtree(job["work_dir"], ignore_errors=True)
