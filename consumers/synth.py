"""A deterministic synthetic event history for tests and benchmarks of the progress store.

Each file goes through the pipeline as the real components would emit it (version 2 of the
contract): manifest, pages (some rescanned, a few removed), close, assembly, page checks, OCR (a
few failures), verdict, and for files sent back, the rescan round. A file's documents are one
image per page, and in every third file also a multi-page PDF. Page checks state a physical
size (A4, some A3, a few unknown). Event ids are stable: the same config gives the same events.
Times fall inside working hours on working days.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sohoa.events import (
    CheckResult,
    Event,
    FileAssembled,
    FileClosed,
    FileManifest,
    FileVerdict,
    OcrCompleted,
    OcrFailed,
    PageChecked,
    PageRef,
    PageRemoved,
    PageScanned,
    PageText,
    RescanReason,
    SiteHeartbeat,
    stable_event_id,
)
from sohoa.naming import natural_key
from sohoa.work_calendar import WorkCalendar

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def sha(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


@dataclass
class SynthConfig:
    sites: int = 3
    files_per_site: int = 6
    pages_per_file: int = 12
    start: date = date(2026, 3, 2)
    days: int = 20
    seed: int = 7
    rescan_share: float = 0.2     # files sent back for rescan
    removed_share: float = 0.03   # pages removed by the operator
    ocr_fail_share: float = 0.1
    with_stream_events: bool = True
    heartbeats: bool = True


def site_ids(n: int) -> list[str]:
    return [f"xa-{i:04d}" for i in range(n)]


def _work_days(start: date, days: int) -> list[date]:
    cal = WorkCalendar()
    out = [start + timedelta(days=i) for i in range(days)]
    return [d for d in out if cal.is_working_day(d)] or [start]


def _at(day: date, rnd: random.Random) -> datetime:
    secs = rnd.randint(0, 8 * 3600)
    local = datetime.combine(day, time(8, 0), tzinfo=TZ) + timedelta(seconds=secs)
    return local.astimezone(UTC)


def generate(cfg: SynthConfig) -> list[Event]:
    """The whole history, in time order (ties broken by generation order)."""
    return [e for _, _, e in sorted(_gen(cfg), key=lambda t: (t[0], t[1]))]


A4, A3 = (210.0, 297.0), (297.0, 420.0)


def page_size(document: str, index: int) -> tuple[float | None, float | None]:
    """The physical size a synthetic page's check reports: mostly A4, some A3, and a few that
    state no resolution (unknown size)."""
    key = sum(map(ord, document)) + index
    if key % 13 == 0:
        return None, None
    return A3 if key % 7 == 0 else A4


@dataclass(frozen=True)
class _Page:
    document: str
    index: int
    pages: int  # of its document
    number: int | None
    media_type: str


def _layout(fi: int, n: int) -> list[_Page]:
    """A file's pages in order: one image per page, except that every third file holds a
    multi-page PDF (a decision of half its pages) after its first image."""
    if fi % 3 != 2 or n < 4:
        return [_Page(f"{p:03d}.tif", 1, 1, p, "image/tiff") for p in range(1, n + 1)]
    k = n // 2
    doc = f"QD-{fi:05d}.pdf"
    return ([_Page("001.tif", 1, 1, 1, "image/tiff")]
            + [_Page(doc, i, k, None, "application/pdf") for i in range(1, k + 1)]
            + [_Page(f"{p:03d}.tif", 1, 1, p, "image/tiff") for p in range(2, n - k + 1)])


def _gen(cfg: SynthConfig) -> Iterator[tuple[datetime, int, Event]]:
    rnd = random.Random(cfg.seed)
    days = _work_days(cfg.start, cfg.days)
    n = 0

    def emit(ev: Event) -> tuple[datetime, int, Event]:
        nonlocal n
        n += 1
        return ev.occurred_at, n, ev

    for site in site_ids(cfg.sites):
        for fi in range(cfg.files_per_site):
            code = f"HS-{fi:05d}"
            fonds = "UBND"
            day = days[(fi * len(days)) // max(1, cfg.files_per_site)]
            t0 = _at(day, rnd)
            base = dict(site_id=site, file_code=code, fonds=fonds)

            def eid(*parts: object, _b=(site, fonds, code)) -> str:
                return stable_event_id("synth", *_b, *parts)

            layout = _layout(fi, cfg.pages_per_file)
            yield emit(FileManifest(**base, event_id=eid("manifest"), title=f"Hồ sơ {fi}",
                                    expected_pages=len(layout), occurred_at=t0))
            t = t0
            # page key -> (revision, page digest, document digest)
            current: dict[tuple[str, int], tuple[int, str, str]] = {}
            doc_sha: dict[str, str] = {}
            by_key = {(pg.document, pg.index): pg for pg in layout}
            for pg in layout:
                t += timedelta(seconds=rnd.randint(20, 90))
                h = sha(site, code, pg.document, pg.index, 1)
                dsha = doc_sha.setdefault(pg.document, h if pg.pages == 1
                                          else sha(site, code, pg.document, "doc", 1))
                current[(pg.document, pg.index)] = (1, h, dsha)
                yield emit(_scan(base, pg, 1, h, dsha, t))
                if pg.pages == 1 and rnd.random() < cfg.removed_share:
                    t += timedelta(seconds=5)
                    yield emit(PageRemoved(**base, event_id=eid("removed", pg.document),
                                           document=pg.document, sha256=h,
                                           path=_path(fonds, code, pg.document),
                                           occurred_at=t))
                    del current[(pg.document, pg.index)]
            t += timedelta(seconds=30)
            yield emit(FileClosed(**base, event_id=eid("closed"), reason="marker",
                                  pages_seen=len(current), occurred_at=t))
            if not cfg.with_stream_events:
                continue
            rev = 1
            rescan = rnd.random() < cfg.rescan_share
            for round_ in (1, 2) if rescan else (1,):
                t += timedelta(seconds=10)
                keys = sorted(current, key=lambda k: (natural_key(k[0]), k[1]))
                refs = [PageRef(document=d, page_index=i, number=by_key[(d, i)].number,
                                uri=_uri(fonds, code, d), document_sha256=current[(d, i)][2],
                                sha256=current[(d, i)][1], media_type=by_key[(d, i)].media_type,
                                revision=current[(d, i)][0]) for d, i in keys]
                yield emit(FileAssembled(**base, event_id=eid("assembled", rev), revision=rev,
                                         pages=refs,
                                         trigger="marker" if round_ == 1 else "late_page",
                                         expected_pages=len(layout),
                                         count_mismatch=len(refs) != len(layout),
                                         occurred_at=t))
                bad: tuple[str, int] | None = None
                for pos, (d, i) in enumerate(keys, 1):
                    r, h, _dsha = current[(d, i)]
                    t += timedelta(seconds=2)
                    passed = not (round_ == 1 and rescan and bad is None)
                    if not passed:
                        bad = (d, i)
                        bad_pos = pos
                    width, height = page_size(d, i)
                    yield emit(PageChecked(**base, event_id=eid("checked", rev, d, i, r),
                                           document=d, page_index=i, sha256=h, revision=r,
                                           checks=[CheckResult(check="dpi", value=300 if passed
                                                               else 150, threshold=200,
                                                               passed=passed)],
                                           passed=passed, width_mm=width, height_mm=height,
                                           occurred_at=t))
                t += timedelta(seconds=60)
                if rnd.random() < cfg.ocr_fail_share:
                    yield emit(OcrFailed(**base, event_id=eid("ocr-failed", rev), revision=rev,
                                         reason="tesseract timeout", occurred_at=t))
                else:
                    yield emit(OcrCompleted(**base, event_id=eid("ocr", rev), revision=rev,
                                            output_uri=f"file:///ocr/{code}.pdf",
                                            output_sha256=sha("ocr", site, code, rev),
                                            pages=[PageText(document=d, page_index=i, chars=1200,
                                                            mean_confidence=88.0)
                                                   for d, i in keys],
                                            seconds=3.5, occurred_at=t))
                t += timedelta(seconds=5)
                if round_ == 1 and rescan and bad is not None:
                    yield emit(FileVerdict(**base, event_id=eid("verdict", rev), revision=rev,
                                           verdict="needs_rescan",
                                           reasons=[RescanReason(document=bad[0],
                                                                 page_index=bad[1],
                                                                 position=bad_pos,
                                                                 reason="dpi dưới 200")],
                                           pages_total=len(current),
                                           pages_accepted=len(current) - 1, occurred_at=t))
                    # The operator rescans the bad page's document the next working day: that
                    # page changes; a multi-page document gets new bytes (its other pages
                    # keep their content, so they are not new revisions).
                    nxt = days[min(days.index(day) + 1, len(days) - 1)]
                    t = max(t, _at(nxt, rnd))
                    pg = by_key[bad]
                    r, _h, _dsha = current[bad]
                    h2 = sha(site, code, pg.document, pg.index, r + 1)
                    dsha2 = h2 if pg.pages == 1 else sha(site, code, pg.document, "doc", r + 1)
                    current[bad] = (r + 1, h2, dsha2)
                    yield emit(_scan(base, pg, r + 1, h2, dsha2, t))
                    rev += 1
                else:
                    yield emit(FileVerdict(**base, event_id=eid("verdict", rev), revision=rev,
                                           verdict="accepted", pages_total=len(current),
                                           pages_accepted=len(current), occurred_at=t))
        if cfg.heartbeats:
            for day in days:
                yield emit(SiteHeartbeat(site_id=site, event_id=stable_event_id(
                    "synth-heartbeat", site, day), agent_version="0.1.0",
                    outbox_depth=rnd.randint(0, 3), occurred_at=_at(day, rnd)))


def _path(fonds: str, code: str, document: str) -> str:
    return f"{fonds}/{code}/{document}"


def _uri(fonds: str, code: str, document: str) -> str:
    return f"file:///hot/{_path(fonds, code, document)}"


def _scan(base: dict, pg: _Page, revision: int, h: str, dsha: str, t: datetime) -> PageScanned:
    return PageScanned.make(**base, document=pg.document, page_index=pg.index, number=pg.number,
                            document_pages=pg.pages, uri=_uri(base["fonds"], base["file_code"],
                                                              pg.document),
                            document_sha256=dsha, sha256=h, size_bytes=1000 * pg.pages + pg.index,
                            media_type=pg.media_type, revision=revision,
                            path=_path(base["fonds"], base["file_code"], pg.document),
                            occurred_at=t)
