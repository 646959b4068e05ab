"""A file's verdict from its assembly, its pages' checks and its OCR; thresholds in config.

- rejected: nothing usable (no page, or every page unreadable), or so many failed pages that
  the whole file must be redone (share above ``max_failed_pages_share_for_reject`` in a file
  of at least ``reject_min_pages``); the reason says which;
- needs_rescan: the named pages with their reasons (failed checks, missing numbers,
  duplicates), or the file as a whole (page count differs from the manifest);
- accepted: otherwise.
OCR trouble on our side (timeout, engine crash) is not the site's fault: it never asks for a
rescan, but a file cannot be accepted without its searchable PDF, so it is rejected with the
OCR reason and a new revision (or an operator's replay) can redo it.
"""

from __future__ import annotations

from typing import Any

from sohoa.config import VerdictConfig
from sohoa.events import (
    FileAssembled,
    FileVerdict,
    OcrCompleted,
    OcrFailed,
    RescanReason,
    Verdict,
    stable_event_id,
)


def decide(fa: FileAssembled, checks: dict[int, list[dict[str, Any]]],
           ocr: OcrCompleted | OcrFailed | None, ocr_skipped: str | None,
           cfg: VerdictConfig) -> FileVerdict:
    """``checks``: page_no -> list of check dicts (only pages that were checked)."""
    reasons: list[RescanReason] = []
    failed_pages: set[int] = set()
    for page_no in sorted(checks):
        for c in checks[page_no]:
            if not c["passed"]:
                failed_pages.add(page_no)
                reasons.append(RescanReason(page_no=page_no, reason=_reason(c)))
    for n in fa.gaps:
        reasons.append(RescanReason(page_no=n, reason="missing_page"))
    for n in fa.duplicate_page_nos:
        failed_pages.add(n)
        reasons.append(RescanReason(page_no=n, reason="duplicate_page_number"))
    for group in fa.duplicate_content:
        for n in group[1:]:
            failed_pages.add(n)
            reasons.append(RescanReason(
                page_no=n, reason=f"duplicate_content: same image as page {group[0]}"))
    if fa.count_mismatch:
        reasons.append(RescanReason(
            reason=f"page_count: {len({p.page_no for p in fa.pages})} pages, "
                   f"manifest expects {fa.expected_pages}"))
    if isinstance(ocr, OcrCompleted) and cfg.min_mean_ocr_confidence > 0:
        for p in ocr.pages:
            if p.mean_confidence is not None and p.mean_confidence < cfg.min_mean_ocr_confidence:
                failed_pages.add(p.page_no)
                reasons.append(RescanReason(
                    page_no=p.page_no,
                    reason=f"ocr_confidence: {p.mean_confidence:.0f} < "
                           f"{cfg.min_mean_ocr_confidence:.0f}"))

    page_nos = sorted({p.page_no for p in fa.pages})
    total = len(page_nos)
    accepted_pages = len([n for n in page_nos if n not in failed_pages])
    verdict = Verdict.ACCEPTED
    top: list[RescanReason] = []
    undecodable = [n for n in page_nos
                   if any(c["check"] == "decode" and not c["passed"] for c in checks.get(n, []))]
    if total == 0:
        verdict, top = Verdict.REJECTED, [RescanReason(reason="empty_file: no pages")]
    elif len(undecodable) == total:
        verdict = Verdict.REJECTED
        top = [RescanReason(reason="unreadable: no page could be read")]
    elif (total >= cfg.reject_min_pages and
          len(failed_pages) / total > cfg.max_failed_pages_share_for_reject):
        verdict = Verdict.REJECTED
        top = [RescanReason(reason=f"too_many_failed_pages: {len(failed_pages)} of {total}")]
    elif reasons:
        verdict = Verdict.NEEDS_RESCAN
    elif isinstance(ocr, OcrFailed):
        verdict = Verdict.REJECTED
        top = [RescanReason(reason=f"ocr_failed: {ocr.reason}")]
    elif ocr is None and ocr_skipped and ocr_skipped != "classified" and ocr_skipped != "disabled":
        verdict = Verdict.REJECTED
        top = [RescanReason(reason=f"ocr_skipped: {ocr_skipped}")]
    return FileVerdict(
        event_id=stable_event_id("FileVerdict", fa.site_id, fa.file_code, fa.revision),
        site_id=fa.site_id, fonds=fa.fonds, file_code=fa.file_code, revision=fa.revision,
        verdict=verdict, reasons=top + reasons, pages_total=total,
        pages_accepted=accepted_pages if verdict != Verdict.REJECTED else 0,
    )


def _reason(c: dict[str, Any]) -> str:
    value, threshold = c.get("value"), c.get("threshold")
    if c["check"] == "decode":
        return f"decode: {value}"
    if threshold is None:
        return f"{c['check']}: {value}"
    return f"{c['check']}: {value} (required {threshold})"
