"""Issue 17's labelled page set: on every page, every QC check gives the verdict of its label,
through open_document and check_document_pages with the real decoders (jbig2dec, OpenJPEG,
libtiff, libjpeg, qpdf)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sohoa.config import QcConfig
from sohoa.documents import DocumentRejected, inspect_document, sniff
from streams.qc import PageQc, check_document_pages
from tests.support.labelled_pages import LABELLED, Labelled, one_line, one_pdf, write_all

CFG = QcConfig()
ALL_CHECKS = frozenset({"sha256", "decode", "pixels", "dpi", "colour", "size_mm", "blank",
                        "brightness", "skew_deg", "sharpness"})


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("labelled"))


def page_digests(path: Path) -> tuple[str, tuple[str, ...]]:
    """What the agent sent; for a file it refuses (the worker may still meet one, e.g. cut
    after it was hashed), the single page's digest is the file's hash."""
    try:
        with open(path, "rb") as f:
            facts = inspect_document(f, path.stat().st_size)
        return facts.media_type, facts.page_sha256
    except DocumentRejected:
        data = path.read_bytes()
        return sniff(data[:16]) or "", (hashlib.sha256(data).hexdigest(),)


def assert_label(res: PageQc, lab: Labelled) -> None:
    verdict = {c.check: c.passed for c in res.checks}
    values = {c.check: c.value for c in res.checks}
    if lab.reason:
        assert not res.decoded and not res.passed and verdict.get("decode") is False
        assert str(values["decode"]).startswith(lab.reason + ":"), values["decode"]
        assert " at 0x" not in str(values["decode"])
        return
    assert res.decoded, (lab.name, values)
    failed = {k for k, ok in verdict.items() if not ok}
    assert failed == lab.fails, (lab.name, values)
    assert set(verdict) == ALL_CHECKS - lab.absent, lab.name
    assert res.passed == (not lab.fails)


@pytest.mark.parametrize("lab", LABELLED, ids=[lab.name for lab in LABELLED])
def test_every_check_gives_its_label(labelled: dict[str, Path], lab: Labelled) -> None:
    path = labelled[lab.name]
    media, digests = page_digests(path)
    [res] = check_document_pages(str(path), media, [(1, digests[0])], CFG)
    assert res.page_index == 1
    assert_label(res, lab)
    if res.decoded:
        assert res.width_mm and res.height_mm


def test_the_labels_hold_inside_one_multipage_pdf(tmp_path: Path) -> None:
    """The same defects as pages of one PDF, checked in two chunks out of order (as pool
    workers share a long document): each page's verdicts are its label's."""
    path, labels = one_pdf(tmp_path / "all.pdf")
    media, digests = page_digests(path)
    assert media == "application/pdf" and len(digests) == len(labels)
    order = list(range(len(labels), 0, -1))
    chunks = [order[:5], order[5:]]
    results = []
    for chunk in chunks:
        out = check_document_pages(str(path), media, [(i, digests[i - 1]) for i in chunk], CFG)
        assert [r.page_index for r in out] == chunk
        results += out
    for res in results:
        assert_label(res, labels[res.page_index - 1])


def test_a_changed_page_fails_only_its_own_digest(tmp_path: Path) -> None:
    path, _ = one_pdf(tmp_path / "all.pdf")
    media, digests = page_digests(path)
    other = "f" * 64
    out = check_document_pages(str(path), media, [(1, digests[0]), (2, other)], CFG)
    assert out[0].passed
    sha = next(c for c in out[1].checks if c.check == "sha256")
    assert not sha.passed and not out[1].decoded and len(out[1].checks) == 1
    # The reason names no digest: it must not reveal what the file now holds.
    assert isinstance(sha.value, str)
    assert digests[1] not in sha.value and digests[1][:8] not in sha.value


def test_the_signature_page_of_the_issue_was_below_the_old_ink_floor() -> None:
    """The one-line page is the issue's case: its share of dark pixels is under the old
    0.002 blank floor (so it was flagged blank), and it is not blank now."""
    import numpy as np

    from streams.qc import _analysis_luma

    luma = _analysis_luma(one_line(), QcConfig())
    old_ink = float((luma < np.percentile(luma, 90) * 0.6).mean())
    assert old_ink < 0.002
