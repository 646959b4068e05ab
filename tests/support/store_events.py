"""Events the progress-store tests feed the applier: a one-page document (``page``), every page
of a multi-page document (``document``) and a page's QC result (``checked``), all dated from
``T0``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumers.synth import sha
from sohoa.events import CheckResult, PageChecked, PageScanned

T0 = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)  # 09:00 in Hà Nội, a Tuesday


def page(site: str = "xa-a", code: str = "F1", no: int = 1, rev: int = 1, t: datetime = T0,
         content: object = None, fonds: str = "", document: str | None = None) -> PageScanned:
    """A one-page document claiming page ``no`` (named ``NNN.tif`` unless ``document``)."""
    document = document or f"{no:03d}.tif"
    return PageScanned.make(site_id=site, fonds=fonds, file_code=code, document=document,
                            number=no, revision=rev, uri=f"file:///hot/{code}/{document}",
                            sha256=sha(content or (site, fonds, code, document, rev)),
                            size_bytes=10, media_type="image/tiff", path=f"{code}/{document}",
                            occurred_at=t)


def document(name: str, pages: int, *, code: str = "HS-01", fonds: str = "UBND",
             rev: int = 1, changed: frozenset[int] = frozenset(), minutes: int = 0,
             content: str = "v1", site: str = "xa-a") -> list[PageScanned]:
    """Every page of one document as the agent sends it: one event per page, the document's
    digest on each; ``changed`` pages carry new content at revision ``rev``."""
    doc_sha = sha(site, fonds, code, name, content)
    single = pages == 1
    out = []
    for i in range(1, pages + 1):
        page_rev = rev if i in changed else 1
        page_sha = doc_sha if single else sha(site, fonds, code, name, i, page_rev)
        out.append(PageScanned.make(
            site_id=site, fonds=fonds, file_code=code, document=name, page_index=i,
            document_pages=pages, number=_number(name) if single else None,
            uri=f"file:///hot/{fonds}/{code}/{name}", document_sha256=doc_sha, sha256=page_sha,
            size_bytes=1000 * pages, media_type="application/pdf", revision=page_rev,
            path=f"{fonds}/{code}/{name}", occurred_at=T0 + timedelta(minutes=minutes,
                                                                    seconds=i)))
    return out


def _number(name: str) -> int | None:
    from sohoa.naming import claimed_number

    return claimed_number(name)


def checked(p: PageScanned, minutes: int = 30, passed: bool = True,
            size: tuple[float, float] | None = (210.0, 297.0)) -> PageChecked:
    return PageChecked(site_id=p.site_id, fonds=p.fonds, file_code=p.file_code,
                       document=p.document, page_index=p.page_index, sha256=p.sha256,
                       revision=p.revision, passed=passed, width_mm=size and size[0],
                       height_mm=size and size[1],
                       checks=[CheckResult(check="dpi", value=300, threshold=200,
                                           passed=passed)],
                       occurred_at=T0 + timedelta(minutes=minutes))
