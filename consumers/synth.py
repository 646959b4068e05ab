"""A deterministic synthetic event history for tests and benchmarks of the progress store.

Each file goes through the pipeline as the real components would emit it: manifest, pages
(some rescanned, a few removed), close, assembly, page checks, OCR (a few failures), verdict,
and for files sent back, the rescan round. Times fall inside working hours on working days.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from consumers.forecast import WorkCalendar
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
)

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
            yield emit(FileManifest(**base, title=f"Hồ sơ {fi}", expected_pages=cfg.pages_per_file,
                                    occurred_at=t0))
            t = t0
            current: dict[int, tuple[int, str]] = {}
            for p in range(1, cfg.pages_per_file + 1):
                t += timedelta(seconds=rnd.randint(20, 90))
                h = sha(site, code, p, 1)
                current[p] = (1, h)
                yield emit(PageScanned.make(**base, page_no=p, uri=f"file:///hot/{fonds}/{code}/"
                                            f"{p:03d}.tif", sha256=h, size_bytes=1000 + p,
                                            media_type="image/tiff", revision=1,
                                            path=f"{fonds}/{code}/{p:03d}.tif", occurred_at=t))
                if rnd.random() < cfg.removed_share:
                    t += timedelta(seconds=5)
                    yield emit(PageRemoved(**base, page_no=p, sha256=h,
                                           path=f"{fonds}/{code}/{p:03d}.tif", occurred_at=t))
                    del current[p]
            t += timedelta(seconds=30)
            yield emit(FileClosed(**base, reason="marker", pages_seen=len(current),
                                  occurred_at=t))
            if not cfg.with_stream_events:
                continue
            rev = 1
            rescan = rnd.random() < cfg.rescan_share
            for round_ in (1, 2) if rescan else (1,):
                t += timedelta(seconds=10)
                refs = [PageRef(page_no=p, uri=f"file:///hot/{fonds}/{code}/{p:03d}.tif",
                                sha256=h, revision=r) for p, (r, h) in sorted(current.items())]
                yield emit(FileAssembled(**base, revision=rev, pages=refs,
                                         trigger="marker" if round_ == 1 else "late_page",
                                         expected_pages=cfg.pages_per_file,
                                         count_mismatch=len(refs) != cfg.pages_per_file,
                                         occurred_at=t))
                bad_page = None
                for p, (r, h) in sorted(current.items()):
                    t += timedelta(seconds=2)
                    passed = not (round_ == 1 and rescan and bad_page is None)
                    if not passed:
                        bad_page = p
                    yield emit(PageChecked(**base, page_no=p, sha256=h, revision=r,
                                           checks=[CheckResult(check="dpi", value=300 if passed
                                                               else 150, threshold=200,
                                                               passed=passed)],
                                           passed=passed, occurred_at=t))
                t += timedelta(seconds=60)
                if rnd.random() < cfg.ocr_fail_share:
                    yield emit(OcrFailed(**base, revision=rev, reason="tesseract timeout",
                                         occurred_at=t))
                else:
                    yield emit(OcrCompleted(**base, revision=rev, output_uri=f"file:///ocr/{code}"
                                            f".pdf", output_sha256=sha("ocr", site, code, rev),
                                            pages=[PageText(page_no=p, chars=1200,
                                                            mean_confidence=88.0)
                                                   for p in sorted(current)],
                                            seconds=3.5, occurred_at=t))
                t += timedelta(seconds=5)
                if round_ == 1 and rescan:
                    yield emit(FileVerdict(**base, revision=rev, verdict="needs_rescan",
                                           reasons=[RescanReason(page_no=bad_page,
                                                                 reason="dpi dưới 200")],
                                           pages_total=len(current),
                                           pages_accepted=len(current) - 1, occurred_at=t))
                    # The operator rescans the bad page the next working day.
                    nxt = days[min(days.index(day) + 1, len(days) - 1)]
                    t = max(t, _at(nxt, rnd))
                    if bad_page is not None:
                        h2 = sha(site, code, bad_page, 2)
                        current[bad_page] = (2, h2)
                        yield emit(PageScanned.make(
                            **base, page_no=bad_page, uri=f"file:///hot/{fonds}/{code}/"
                            f"{bad_page:03d}.tif", sha256=h2, size_bytes=2000, revision=2,
                            media_type="image/tiff", path=f"{fonds}/{code}/{bad_page:03d}.tif",
                            occurred_at=t))
                    rev += 1
                else:
                    yield emit(FileVerdict(**base, revision=rev, verdict="accepted",
                                           pages_total=len(current),
                                           pages_accepted=len(current), occurred_at=t))
        if cfg.heartbeats:
            for d in days:
                yield emit(SiteHeartbeat(site_id=site, agent_version="0.1.0",
                                         outbox_depth=rnd.randint(0, 3),
                                         occurred_at=_at(d, rnd)))
