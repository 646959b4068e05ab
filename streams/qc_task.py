"""The QC pool's unit of work: some pages of one document, read once, checked one by one.

Runs in the OCR app's spawn process pool. The document is found from the event's URI and site
(workers read only where the site may point), then each page is decoded and measured in turn,
so memory holds one page at a time whatever the document's size.
"""

from __future__ import annotations

from typing import Any

from streams.qc import check_page


def check_chunk(site_id: str, uri: str, document_sha256: str, media_type: str,
                pages: list[tuple[int, str]], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """One result per page of ``pages`` ([(page_index, page digest)]), in order: its checks,
    whether it passed, and its physical size in millimetres when known."""
    out = []
    for index, digest in pages:
        res = check_page(uri, document_sha256, cfg)
        res["page_index"] = index
        for c in res["checks"]:
            if c["check"] == "size_mm" and isinstance(c["value"], str) and "x" in c["value"]:
                w, _, h = c["value"].partition("x")
                res["width_mm"], res["height_mm"] = float(w), float(h)
        del digest
        out.append(res)
    return out
