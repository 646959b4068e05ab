"""A file's verdict from its assembly, its pages' checks and its OCR; thresholds in config.

- rejected: nothing usable (no page, or every page unreadable), or so many failed pages that
  the whole file must be redone (share above ``max_failed_pages_share_for_reject`` in a file
  of at least ``reject_min_pages``); the reason says which;
- needs_rescan: the named pages (document, page, place in the file) with their reasons
  (failed checks, missing numbers or pages or documents, duplicates), or the file as a whole
  (page count differs from the manifest);
- accepted: otherwise.
OCR trouble on our side (timeout, engine crash) is not the site's fault: it never asks for a
rescan, but a file cannot be accepted without its searchable PDF, so it is rejected with the
OCR reason and a new revision (or an operator's replay) can redo it.
"""

from __future__ import annotations

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
from streams.qc import Check

PageId = tuple[str, int]  # (document, page_index)


def decide(fa: FileAssembled, checks: dict[PageId, list[Check]],
           ocr: OcrCompleted | OcrFailed | None, ocr_skipped: str | None,
           cfg: VerdictConfig) -> FileVerdict:
    """``checks``: (document, page_index) -> the page's checks (only pages checked)."""
    position = {(p.document, p.page_index): i for i, p in enumerate(fa.pages, start=1)}
    reasons: list[RescanReason] = []
    failed_pages: set[PageId] = set()

    def page(key: PageId, reason: str, *, fails: bool = True) -> None:
        if fails:
            failed_pages.add(key)
        reasons.append(RescanReason(document=key[0], page_index=key[1],
                                    position=position.get(key), reason=reason))

    for key in sorted(checks, key=lambda k: position.get(k, 0)):
        for c in checks[key]:
            if not c.passed:
                page(key, _reason(c))
    one_page_each = len({p.document for p in fa.pages}) == len(fa.pages)
    for n in fa.gaps:
        reasons.append(RescanReason(
            number=n, reason="missing_page" if one_page_each else "missing_document"))
    for k in fa.missing_pages:
        reasons.append(RescanReason(document=k.document, page_index=k.page_index,
                                    reason="missing_page"))
    for name in fa.missing_documents:
        reasons.append(RescanReason(document=name, reason="missing_document"))
    duplicated = set(fa.duplicate_page_nos)
    for p in fa.pages:
        if p.number is not None and p.number in duplicated:
            page((p.document, p.page_index), f"duplicate_page_number: {p.number}")
    for group in fa.duplicate_content:
        first = group[0]
        for k in group[1:]:
            page((k.document, k.page_index),
                 f"duplicate_content: same image as {first.document} page {first.page_index}")
    if fa.count_mismatch:
        reasons.append(RescanReason(
            reason=f"page_count: {len(fa.pages)} pages, manifest expects {fa.expected_pages}"))
    if isinstance(ocr, OcrCompleted) and cfg.min_mean_ocr_confidence > 0:
        for t in ocr.pages:
            if t.mean_confidence is not None and t.mean_confidence < cfg.min_mean_ocr_confidence:
                page((t.document, t.page_index),
                     f"ocr_confidence: {t.mean_confidence:.0f} < "
                     f"{cfg.min_mean_ocr_confidence:.0f}")

    total = len(fa.pages)
    accepted_pages = total - len(failed_pages & set(position))
    verdict = Verdict.ACCEPTED
    top: list[RescanReason] = []
    undecodable = [k for k in position
                   if any(c.check == "decode" and not c.passed for c in checks.get(k, []))]
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
        event_id=stable_event_id("FileVerdict", 2, fa.site_id, fa.fonds, fa.file_code,
                                 fa.revision),
        site_id=fa.site_id, fonds=fa.fonds, file_code=fa.file_code, revision=fa.revision,
        verdict=verdict, reasons=top + reasons, pages_total=total,
        pages_accepted=accepted_pages if verdict != Verdict.REJECTED else 0,
    )


def _reason(c: Check) -> str:
    if c.check == "decode":
        return f"decode: {c.value}"
    if c.threshold is None:
        return f"{c.check}: {c.value}"
    return f"{c.check}: {c.value} (required {c.threshold})"
