"""Verdict rules (pure): thresholds from VerdictConfig."""

from __future__ import annotations

from sohoa.config import VerdictConfig
from sohoa.events import FileAssembled, OcrCompleted, OcrFailed, PageRef, PageText, Verdict
from streams.verdict import decide

S, F = "xa-tan-phu", "HS-001"


def fa(n: int, **kw) -> FileAssembled:
    pages = [PageRef(page_no=i, uri=f"file:///x/{i}.tif", sha256=f"{i:064x}")
             for i in range(1, n + 1)]
    return FileAssembled(site_id=S, file_code=F, pages=pages, **kw)


def ok(*names: str) -> list[dict]:
    return [{"check": c, "value": 1, "threshold": None, "passed": True} for c in names]


def bad(check: str, value, threshold=None) -> dict:
    return {"check": check, "value": value, "threshold": threshold, "passed": False}


def ocr_done(n: int, conf: float = 90.0) -> OcrCompleted:
    return OcrCompleted(site_id=S, file_code=F, output_uri="file:///o.pdf",
                        output_sha256="a" * 64,
                        pages=[PageText(page_no=i, chars=500, mean_confidence=conf)
                               for i in range(1, n + 1)])


def test_accepted_when_every_page_passes_and_ocr_done() -> None:
    v = decide(fa(3), {i: ok("dpi", "colour") for i in (1, 2, 3)}, ocr_done(3), None,
               VerdictConfig())
    assert v.verdict == Verdict.ACCEPTED and v.pages_accepted == 3 and not v.reasons
    assert v.event_id == decide(fa(3), {}, ocr_done(3), None, VerdictConfig()).event_id


def test_needs_rescan_names_pages_and_reasons() -> None:
    checks = {1: ok("dpi"), 2: [bad("dpi", 150.0, 200)], 3: ok("dpi")}
    v = decide(fa(3, gaps=[4], expected_pages=4, count_mismatch=True), checks, None,
               "needs_rescan", VerdictConfig())
    assert v.verdict == Verdict.NEEDS_RESCAN
    got = {(r.page_no, r.reason.split(":")[0]) for r in v.reasons}
    assert got == {(2, "dpi"), (4, "missing_page"), (None, "page_count")}
    assert v.pages_accepted == 2


def test_rejected_when_too_many_pages_fail_or_nothing_readable_or_ocr_failed() -> None:
    cfg = VerdictConfig(max_failed_pages_share_for_reject=0.5, reject_min_pages=4)
    checks = {i: [bad("blank", 0.0, 0.002)] for i in (1, 2, 3)} | {4: ok("blank")}
    v = decide(fa(4), checks, None, "needs_rescan", cfg)
    assert v.verdict == Verdict.REJECTED and v.reasons[0].reason.startswith("too_many")
    # the same share in a small file asks for a rescan, not a redo
    small = decide(fa(2), {1: [bad("blank", 0.0)], 2: ok("blank")}, None, "needs_rescan",
                   cfg)
    assert small.verdict == Verdict.NEEDS_RESCAN
    unread = decide(fa(1), {1: [bad("decode", "corrupt: x")]}, None, "needs_rescan", cfg)
    assert unread.verdict == Verdict.REJECTED and "unreadable" in unread.reasons[0].reason
    failed = OcrFailed(site_id=S, file_code=F, reason="timeout: timeout after 120s")
    v2 = decide(fa(1), {1: ok("dpi")}, failed, None, cfg)
    assert v2.verdict == Verdict.REJECTED and "ocr_failed" in v2.reasons[0].reason
    assert decide(fa(0), {}, None, "no_pages", cfg).verdict == Verdict.REJECTED


def test_low_ocr_confidence_threshold_from_config() -> None:
    cfg = VerdictConfig(min_mean_ocr_confidence=60)
    v = decide(fa(2), {1: ok("dpi"), 2: ok("dpi")}, ocr_done(2, conf=40.0), None, cfg)
    assert v.verdict == Verdict.NEEDS_RESCAN
    assert {r.page_no for r in v.reasons} == {1, 2}
    assert decide(fa(2), {}, ocr_done(2, conf=40.0), None,
                  VerdictConfig()).verdict == Verdict.ACCEPTED
