"""Verdict rules (pure): thresholds from VerdictConfig."""

from __future__ import annotations

from sohoa.config import VerdictConfig
from sohoa.events import (
    FileAssembled,
    OcrCompleted,
    OcrFailed,
    PageKey,
    PageRef,
    PageText,
    Verdict,
)
from streams.qc import Check
from streams.verdict import decide

S, F = "xa-tan-phu", "HS-001"


def fa(n: int, **kw) -> FileAssembled:
    pages = [PageRef(document=f"{i}.tif", number=i, uri=f"file:///x/{i}.tif",
                     document_sha256=f"{i:064x}", sha256=f"{i:064x}")
             for i in range(1, n + 1)]
    return FileAssembled(site_id=S, file_code=F, pages=pages, **kw)


def k(i: int) -> tuple[str, int]:
    return (f"{i}.tif", 1)


def ok(*names: str) -> list[Check]:
    return [Check(c, value=1, threshold=None, passed=True) for c in names]


def bad(check: str, value, threshold=None) -> Check:
    return Check(check, value=value, threshold=threshold, passed=False)


def ocr_done(n: int, conf: float = 90.0) -> OcrCompleted:
    return OcrCompleted(site_id=S, file_code=F, output_uri="file:///o.pdf",
                        output_sha256="a" * 64,
                        pages=[PageText(document=f"{i}.tif", chars=500, mean_confidence=conf)
                               for i in range(1, n + 1)])


def test_accepted_when_every_page_passes_and_ocr_done() -> None:
    v = decide(fa(3), {k(i): ok("dpi", "colour") for i in (1, 2, 3)}, ocr_done(3), None,
               VerdictConfig())
    assert v.verdict == Verdict.ACCEPTED and v.pages_accepted == 3 and not v.reasons
    assert v.event_id == decide(fa(3), {}, ocr_done(3), None, VerdictConfig()).event_id


def test_needs_rescan_names_pages_and_reasons() -> None:
    checks = {k(1): ok("dpi"), k(2): [bad("dpi", 150.0, 200)], k(3): ok("dpi")}
    v = decide(fa(3, gaps=[4], expected_pages=4, count_mismatch=True), checks, None,
               "needs_rescan", VerdictConfig())
    assert v.verdict == Verdict.NEEDS_RESCAN
    got = {(r.document, r.position, r.number, r.reason.split(":")[0]) for r in v.reasons}
    assert got == {("2.tif", 2, None, "dpi"), (None, None, 4, "missing_page"),
                   (None, None, None, "page_count")}
    assert v.pages_accepted == 2


def test_pages_of_a_document_are_judged_one_by_one() -> None:
    pages = [PageRef(document="bia.jpg", uri="file:///x/bia.jpg", document_sha256="a" * 64,
                     sha256="a" * 64)]
    pages += [PageRef(document="QD.pdf", page_index=i, uri="file:///x/QD.pdf",
                      document_sha256="b" * 64, sha256=f"{i:064x}") for i in range(1, 31)]
    assembled = FileAssembled(site_id=S, file_code=F, pages=pages,
                              missing_pages=[PageKey(document="QD.pdf", page_index=31)],
                              missing_documents=["phu-luc.pdf"])
    checks = {(p.document, p.page_index): ok("dpi") for p in pages}
    checks[("QD.pdf", 29)] = [bad("blank", 0.0, "text line")]
    v = decide(assembled, checks, None, "needs_rescan", VerdictConfig())
    assert v.verdict == Verdict.NEEDS_RESCAN and v.pages_total == 31
    assert v.pages_accepted == 30
    got = {(r.document, r.page_index, r.position, r.reason.split(":")[0]) for r in v.reasons}
    assert got == {("QD.pdf", 29, 30, "blank"), ("QD.pdf", 31, None, "missing_page"),
                   ("phu-luc.pdf", None, None, "missing_document")}


def test_two_documents_claiming_one_number_are_both_named() -> None:
    pages = [PageRef(document=d, number=1, uri=f"file:///x/{d}", document_sha256=h * 64,
                     sha256=h * 64) for d, h in (("001.tif", "a"), ("001.tif|2", "b"))]
    assembled = FileAssembled(site_id=S, file_code=F, pages=pages, duplicate_page_nos=[1])
    v = decide(assembled, {}, None, "needs_rescan", VerdictConfig())
    assert {(r.document, r.reason) for r in v.reasons} == {
        ("001.tif", "duplicate_page_number: 1"), ("001.tif|2", "duplicate_page_number: 1")}
    assert v.pages_accepted == 0 and v.pages_total == 2


def test_rejected_when_too_many_pages_fail_or_nothing_readable_or_ocr_failed() -> None:
    cfg = VerdictConfig(max_failed_pages_share_for_reject=0.5, reject_min_pages=4)
    checks = {k(i): [bad("blank", 0.0, 0.002)] for i in (1, 2, 3)} | {k(4): ok("blank")}
    v = decide(fa(4), checks, None, "needs_rescan", cfg)
    assert v.verdict == Verdict.REJECTED and v.reasons[0].reason.startswith("too_many")
    # the same share in a small file asks for a rescan, not a redo
    small = decide(fa(2), {k(1): [bad("blank", 0.0)], k(2): ok("blank")}, None,
                   "needs_rescan", cfg)
    assert small.verdict == Verdict.NEEDS_RESCAN
    unread = decide(fa(1), {k(1): [bad("decode", "corrupt: x")]}, None, "needs_rescan", cfg)
    assert unread.verdict == Verdict.REJECTED and "unreadable" in unread.reasons[0].reason
    failed = OcrFailed(site_id=S, file_code=F, reason="timeout: timeout after 120s")
    v2 = decide(fa(1), {k(1): ok("dpi")}, failed, None, cfg)
    assert v2.verdict == Verdict.REJECTED and "ocr_failed" in v2.reasons[0].reason
    assert decide(fa(0), {}, None, "no_pages", cfg).verdict == Verdict.REJECTED


def test_low_ocr_confidence_threshold_from_config() -> None:
    cfg = VerdictConfig(min_mean_ocr_confidence=60)
    v = decide(fa(2), {k(1): ok("dpi"), k(2): ok("dpi")}, ocr_done(2, conf=40.0), None, cfg)
    assert v.verdict == Verdict.NEEDS_RESCAN
    assert {r.position for r in v.reasons} == {1, 2}
    assert decide(fa(2), {}, ocr_done(2, conf=40.0), None,
                  VerdictConfig()).verdict == Verdict.ACCEPTED
