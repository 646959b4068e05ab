"""A document's pages out of a file's PDF/A, still PDF/A.

The OCR stage writes one PDF/A per file revision, pages in the file's order; Art. 8 wants one
signed copy per document. A copy of the file's PDF keeps the document's pages and drops the
others, so its OutputIntent, XMP identification and fonts stay as the OCR made them (qpdf
writes only the objects still reachable). When the OCR writes one PDF/A per document, this
step is that file itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pikepdf


def split_document(src: Path, pages: Sequence[int], dst: Path) -> Path:
    """Write to ``dst`` the pages ``pages`` (0-based, in order) of ``src``."""
    if not pages:
        raise ValueError(f"{src.name}: no page for this document")
    keep = set(pages)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    with pikepdf.open(src) as pdf:
        if max(keep) >= len(pdf.pages):
            raise ValueError(f"{src.name} has {len(pdf.pages)} pages, not {max(keep) + 1}")
        for i in reversed(range(len(pdf.pages))):
            if i not in keep:
                del pdf.pages[i]
        # Outlines and page labels pointed at the file's pages: not this document's.
        for k in ("/Outlines", "/PageLabels"):
            if k in pdf.Root:
                del pdf.Root[k]
        pdf.save(tmp)
    os.replace(tmp, dst)
    return dst
