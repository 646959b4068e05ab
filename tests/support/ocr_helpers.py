"""What the OCR tests judge outputs with: veraPDF (the independent PDF/A validator), the text
layer as pdftotext reads it, and the character error rate against the text rendered."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pikepdf

from infra.verapdf import validate
from streams.ocr import OcrPage


def cer(ref: str, hyp: str) -> float:
    """Character error rate: edit distance / reference length, whitespace collapsed."""
    a, b = " ".join(ref.split()), " ".join(hyp.split())
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] / max(1, len(a))


def text_layer(pdf: Path, page: int) -> str:
    """The text of one page (1-based) as a reader's search or copy would get it."""
    return subprocess.run(["pdftotext", "-raw", "-f", str(page), "-l", str(page), str(pdf), "-"],
                          capture_output=True, text=True, check=True).stdout


def assert_pdfa(pdfs: list[Path]) -> None:
    """Every file passes veraPDF as PDF/A-2b (and says so in its XMP)."""
    assert pdfs, "no PDF to validate"
    verdicts = validate(list(pdfs), "2b")
    bad = [v.summary() for v in verdicts if not v.compliant]
    assert not bad, "\n".join(bad)
    for p in pdfs:
        with pikepdf.open(p) as doc:
            assert doc.open_metadata().pdfa_status == "2B", p


def image_streams(pdf: Path) -> list[bytes]:
    """Raw (still encoded) bytes of the image drawn on each page, in page order."""
    out = []
    with pikepdf.open(pdf) as doc:
        for page in doc.pages:
            imgs = list(page.get_images().values())
            assert len(imgs) == 1, f"{pdf}: {len(imgs)} images on a page"
            out.append(imgs[0].read_raw_bytes())
    return out


def job_pages(files: list[Path], languages: dict[str, str] | None = None) -> list[OcrPage]:
    """An OCR job's pages for these documents, as the OCR app makes them from a
    FileAssembled: every page of each, counted and digested as the site agent does."""
    from sohoa.documents import inspect_document

    out = []
    for f in files:
        with f.open("rb") as fh:
            facts = inspect_document(fh, f.stat().st_size)
        for i, digest in enumerate(facts.page_sha256, start=1):
            out.append(OcrPage(document=f.name, page_index=i, uri=f.resolve().as_uri(),
                               document_sha256=facts.sha256, sha256=digest,
                               media_type=facts.media_type,
                               languages=(languages or {}).get(f.name)))
    return out
